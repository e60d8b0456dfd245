/* libqkd example: one block from simulation to final keys, in one process.
 *
 * First the whole pipeline in one call (qkd_pipeline_process_block) with its report; then the
 * same stages by hand, as a two-site deployment drives them:
 *   simulate -> estimate (sample) -> Cascade (loopback) -> confirm -> secret length
 *   -> Toeplitz on both sides -> entropy verdict.
 *
 * Build: gcc -std=c11 -Wall -Wextra pipeline.c $(pkg-config --cflags --libs qkd)
 * Usage: pipeline [BITS [QBER]]   (default 1000000 bits at QBER 0.03) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "qkd.h"

#define TRY(call)                                                                  \
    do {                                                                           \
        qkd_result rc_ = (call);                                                   \
        if (rc_ != QKD_OK) {                                                       \
            char d_[512];                                                          \
            size_t n_ = 0;                                                         \
            if (qkd_last_error_message(d_, sizeof d_, &n_) != QKD_OK) d_[0] = 0;   \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, qkd_result_message(rc_), \
                    d_);                                                           \
            goto out;                                                              \
        }                                                                          \
    } while (0)

int main(int argc, char **argv) {
    size_t bits = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 1000000;
    double qber = argc > 2 ? strtod(argv[2], NULL) : 0.03;
    const double eps_pe = 1e-10, eps_sec = 1e-10, eps_cor = 1e-15;
    int status = 1;
    qkd_block *alice = NULL, *bob = NULL, *a_rest = NULL, *b_rest = NULL, *b_fixed = NULL;
    qkd_block *pa_seed = NULL, *final_a = NULL, *final_b = NULL;
    qkd_confirm *confirm = NULL;
    uint8_t *sample_msg = NULL;
    size_t sample_len = 0, diff = 0;
    uint8_t seed[QKD_SEED_LEN], cmsg[64], creply[64];
    size_t clen = 0, rlen = 0;
    qkd_sim_report sim;
    qkd_qber_estimate est;
    qkd_cascade_report cas;
    qkd_confirm_outcome conf_a, conf_b;
    qkd_secret_length len;
    qkd_entropy_report ent;

    printf("libqkd %s\n", qkd_version());
    TRY(qkd_simulate(bits, qber, QKD_ERROR_MODEL_IID, NULL, &alice, &bob, &sim));
    printf("simulate   %llu bits, %llu errors (QBER %.4f)\n", (unsigned long long)sim.bits,
           (unsigned long long)sim.errors, sim.actual_qber);

    /* The pipeline in one call. */
    {
        qkd_pipeline_config cfg;
        qkd_block_report r;
        qkd_block *key = NULL;
        TRY(qkd_pipeline_config_default(&cfg));
        cfg.sample_bits = bits / 10;
        TRY(qkd_pipeline_process_block(alice, bob, &cfg, &r, &key));
        printf("\n-- pipeline report --\n");
        printf("outcome          %s%s%s\n",
               r.outcome == QKD_OUTCOME_KEY         ? "key"
               : r.outcome == QKD_OUTCOME_DISCARDED ? "discarded"
                                                    : "quarantined",
               r.outcome_reason[0] ? ": " : "", r.outcome_reason);
        printf("estimate         %llu sampled, %llu errors, QBER %.4f (bound %.4f)\n",
               (unsigned long long)r.sample_bits, (unsigned long long)r.sample_errors, r.qber,
               r.qber_upper);
        printf("reconcile        %llu bits, %llu parities, %llu corrected, %llu residual, "
               "f = %.3f, %u round trips\n",
               (unsigned long long)r.reconciled_bits, (unsigned long long)r.leak_alice_bits,
               (unsigned long long)r.errors_corrected, (unsigned long long)r.residual_errors,
               r.efficiency, r.round_trips);
        printf("confirm          %s, %u tag bits\n", r.confirmed ? "matched" : "mismatch",
               r.confirm_tag_bits);
        printf("final key        %llu bits (bound %.1f)\n", (unsigned long long)r.final_bits,
               r.secret_raw_bits);
        printf("entropy          %s\n", !r.entropy_checked              ? "not checked"
                                        : r.entropy == QKD_VERDICT_PASS ? "pass"
                                                                         : "not passed");
        printf("seconds          estimate %.3f, reconcile %.3f, confirm %.3f, amplify %.3f, "
               "check %.3f\n",
               r.seconds_estimate, r.seconds_reconcile, r.seconds_confirm, r.seconds_amplify,
               r.seconds_check);
        qkd_block_free(key);
        printf("\n-- the same, stage by stage --\n");
    }

    /* Estimation: Alice discloses 10 % of her bits, chosen by a fresh public seed. */
    TRY(qkd_random_seed(seed));
    if (qkd_sample_disclose(alice, bits / 10, seed, NULL, 0, &sample_len, &a_rest) !=
        QKD_ERR_BUFFER_TOO_SHORT) {
        fprintf(stderr, "size query failed\n");
        goto out;
    }
    sample_msg = malloc(sample_len);
    if (sample_msg == NULL) goto out;
    TRY(qkd_sample_disclose(alice, bits / 10, seed, sample_msg, sample_len, &sample_len, &a_rest));
    TRY(qkd_sample_compare(bob, sample_msg, sample_len, eps_pe, QKD_BOUND_HYPERGEOMETRIC, &est,
                           &b_rest));
    printf("estimate   %llu sampled, %llu errors, QBER %.4f, bound %.4f (eps %.0e), %llu bits left\n",
           (unsigned long long)est.k, (unsigned long long)est.errors, est.observed_qber,
           est.qber_upper, est.eps, (unsigned long long)est.remaining_bits);

    /* Reconciliation (both parties in this process; see cascade_two_party.c for two). */
    TRY(qkd_random_seed(seed));
    TRY(qkd_cascade_loopback(a_rest, b_rest, NULL, est.qber_upper, seed, &b_fixed, &cas));
    printf("cascade    %llu corrected, %llu bits disclosed, f = %.3f, %u round trips, "
           "%llu residual errors, %.3f s\n",
           (unsigned long long)cas.stats.corrected, (unsigned long long)cas.stats.disclosed_bits,
           cas.efficiency, cas.stats.round_trips, (unsigned long long)cas.residual_errors,
           cas.seconds);

    /* Confirmation. */
    TRY(qkd_confirm_start(a_rest, eps_cor, cmsg, sizeof cmsg, &clen, &confirm));
    TRY(qkd_confirm_respond(b_fixed, eps_cor, cmsg, clen, creply, sizeof creply, &rlen, &conf_b));
    TRY(qkd_confirm_finish(confirm, creply, rlen, &conf_a));
    printf("confirm    %s (%u tag bits)\n", conf_a.matched ? "matched" : "MISMATCH: block discarded",
           conf_a.leaked_bits);
    if (!conf_a.matched || !conf_b.matched) goto out;

    /* Secret length (finite key) and privacy amplification. */
    {
        /* Sized for the block's rung of the QBER ladder (fixed in advance), with Cascade's
         * leakage on both sides and the tag charged once. */
        double rung = 0;
        uint32_t rungs = 0;
        TRY(qkd_qber_ladder_rung(0.11, est.observed_qber, &rung, &rungs));
        if (isnan(rung)) {
            printf("sample QBER above the ladder's top rung: block discarded\n");
            goto out;
        }
        qkd_finite_key_input in = {.key_bits = est.remaining_bits,
                                   .sample_bits = est.k,
                                   .qber = rung,
                                   .leak_ec_bits = cas.stats.disclosed_bits + cas.stats.bob_leak_bits,
                                   .confirm_tag_bits = conf_a.leaked_bits,
                                   .length_choices = rungs,
                                   .eps_sec = eps_sec,
                                   .eps_cor = eps_cor,
                                   .preparation_quality = 1.0};
        TRY(qkd_secret_length_bb84(&in, &len));
    }
    printf("length     %llu secret bits (asymptotic %.0f, finite-size allowance %.4f)\n",
           (unsigned long long)len.bits, len.asymptotic_bits, len.qber_deviation);
    if (len.bits == 0) {
        printf("no key from this block\n");
        status = 0;
        goto out;
    }
    TRY(qkd_random_seed(seed)); /* sent to Bob in a real link: 32 bytes */
    TRY(qkd_block_from_seed(seed, qkd_toeplitz_seed_bits(est.remaining_bits, len.bits), &pa_seed));
    TRY(qkd_toeplitz_hash(a_rest, pa_seed, len.bits, &final_a));
    TRY(qkd_toeplitz_hash(b_fixed, pa_seed, len.bits, &final_b));
    TRY(qkd_block_hamming_distance(final_a, final_b, &diff));
    printf("amplify    final keys of %llu bits, %s\n", (unsigned long long)len.bits,
           diff == 0 ? "identical" : "DIFFERENT");

    TRY(qkd_entropy_assess_block(final_a, QKD_ENTROPY_DEFAULT_FALSE_ALARM, &ent));
    printf("entropy    %s: Shannon %.5f bits/byte, min-entropy %.4f, monobit p %.3f, runs p %.3f\n",
           ent.verdict == QKD_VERDICT_PASS ? "pass"
           : ent.verdict == QKD_VERDICT_FAIL ? "FAIL"
                                             : "insufficient data",
           ent.shannon_bits_per_byte, ent.min_entropy_bits_per_byte, ent.monobit_p_value,
           ent.runs_p_value);
    printf("key rate   %.4f secret bits per raw bit\n", (double)len.bits / (double)bits);
    status = (diff == 0 && ent.verdict != QKD_VERDICT_FAIL) ? 0 : 1;

out:
    free(sample_msg);
    qkd_confirm_free(confirm);
    qkd_block_free(alice);
    qkd_block_free(bob);
    qkd_block_free(a_rest);
    qkd_block_free(b_rest);
    qkd_block_free(b_fixed);
    qkd_block_free(pa_seed);
    qkd_block_free(final_a);
    qkd_block_free(final_b);
    return status;
}
