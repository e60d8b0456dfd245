/* libqkd example: Alice and Bob as two processes that share no memory, exchanging messages
 * over a socketpair (a stand-in for the authenticated classical channel between two KMEs):
 *
 *   Alice -> Bob   estimation sample          Bob -> Alice   errors in the sample
 *   Bob -> Alice   Cascade hello, queries     Alice -> Bob   parities, answers
 *   Alice -> Bob   confirmation challenge     Bob -> Alice   verdict
 *   Alice -> Bob   privacy-amplification seed (32 bytes)
 *
 * Both processes simulate the same raw key pair from a fixed seed (standing in for the quantum
 * channel); Alice keeps her half, Bob his. Exit status 0 when both sides end with the same
 * final key, checked by confirmation and by comparing short fingerprints (test only: a real
 * deployment never sends key-derived bytes).
 *
 * Build: gcc -std=c11 -Wall -Wextra cascade_two_party.c $(pkg-config --cflags --libs qkd)
 * Usage: cascade_two_party [BITS [QBER]]   (default 200000 bits at QBER 0.04) */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qkd.h"

static const uint64_t SIM_SEED = 424242;
static const double EPS_PE = 1e-10, EPS_SEC = 1e-10, EPS_COR = 1e-15, MAX_QBER = 0.11;

/* The finite-key length, computed alike on both sides: the block is sized for its rung of the
 * QBER ladder (fixed before any sample is seen), with Cascade's leakage on both sides (Alice's
 * parities plus Bob's key-dependent bits) and the confirmation tag charged once. */
static qkd_result size_key(const qkd_qber_estimate *est, uint64_t cascade_leak, uint32_t tag_bits,
                           qkd_secret_length *sl) {
    double rung = 0;
    uint32_t rungs = 0;
    qkd_result rc = qkd_qber_ladder_rung(MAX_QBER, est->observed_qber, &rung, &rungs);
    if (rc != QKD_OK) return rc;
    if (isnan(rung)) { /* above the top rung: the block aborts */
        memset(sl, 0, sizeof *sl);
        return QKD_OK;
    }
    qkd_finite_key_input in = {.key_bits = est->remaining_bits,
                               .sample_bits = est->k,
                               .qber = rung,
                               .leak_ec_bits = cascade_leak,
                               .confirm_tag_bits = tag_bits,
                               .length_choices = rungs,
                               .eps_sec = EPS_SEC,
                               .eps_cor = EPS_COR,
                               .preparation_quality = 1.0};
    return qkd_secret_length_bb84(&in, sl);
}

/* ---- framing: 4-byte little-endian length, then the bytes ---- */

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int send_msg(int fd, const uint8_t *p, size_t n) {
    uint8_t hdr[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    return write_all(fd, hdr, 4) || write_all(fd, p, n) ? -1 : 0;
}

/* Receives one message into *buf (grown as needed). Returns its length or -1. */
static long recv_msg(int fd, uint8_t **buf, size_t *cap) {
    uint8_t hdr[4];
    size_t n;
    if (read_all(fd, hdr, 4)) return -1;
    n = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 24;
    if (n > *cap) {
        uint8_t *grown = realloc(*buf, n);
        if (grown == NULL) return -1;
        *buf = grown;
        *cap = n;
    }
    return read_all(fd, *buf, n) ? -1 : (long)n;
}

static int fail(const char *who, const char *what, qkd_result rc) {
    char d[512];
    size_t n = 0;
    if (qkd_last_error_message(d, sizeof d, &n) != QKD_OK) d[0] = 0;
    fprintf(stderr, "%s: %s failed: %s (%s)\n", who, what, qkd_result_message(rc), d);
    return 1;
}

#define TRY(who, call)                                 \
    do {                                               \
        qkd_result rc_ = (call);                       \
        if (rc_ != QKD_OK) return fail(who, #call, rc_); \
    } while (0)

/* Sends a party's queued message, growing the buffer when the library asks for more. */
typedef qkd_result (*take_fn)(void *party, uint8_t *buf, size_t cap, size_t *len);
static qkd_result take_alice(void *p, uint8_t *b, size_t c, size_t *l) {
    return qkd_cascade_alice_take_message((qkd_cascade_alice *)p, b, c, l);
}
static qkd_result take_bob(void *p, uint8_t *b, size_t c, size_t *l) {
    return qkd_cascade_bob_take_message((qkd_cascade_bob *)p, b, c, l);
}
static int send_queued(int fd, take_fn take, void *party, uint8_t **buf, size_t *cap) {
    size_t len = 0;
    qkd_result rc = take(party, *buf, *cap, &len);
    if (rc == QKD_ERR_BUFFER_TOO_SHORT) {
        uint8_t *grown = realloc(*buf, len);
        if (grown == NULL) return -1;
        *buf = grown;
        *cap = len;
        rc = take(party, *buf, *cap, &len);
    }
    if (rc != QKD_OK) return fail("send", "take_message", rc);
    return send_msg(fd, *buf, len);
}

/* A 64-bit fingerprint of a key, for the example's final check only. */
static uint64_t fingerprint(const qkd_block *key) {
    size_t len = 0;
    uint64_t h = 1469598103934665603ull;
    if (qkd_block_to_bytes(key, NULL, 0, &len) != QKD_ERR_BUFFER_TOO_SHORT) return 0;
    uint8_t *bytes = malloc(len);
    if (bytes == NULL || qkd_block_to_bytes(key, bytes, len, &len) != QKD_OK) {
        free(bytes);
        return 0;
    }
    for (size_t i = 0; i < len; i++) h = (h ^ bytes[i]) * 1099511628211ull;
    memset(bytes, 0, len); /* key material: wipe the copy */
    free(bytes);
    return h;
}

static int alice_main(int fd, size_t bits, double qber) {
    qkd_block *mine = NULL, *theirs = NULL, *key = NULL, *pa_seed = NULL, *final_key = NULL;
    qkd_cascade_alice *alice = NULL;
    qkd_confirm *confirm = NULL;
    uint8_t *buf = malloc(1 << 16), seed[QKD_SEED_LEN];
    size_t cap = 1 << 16, len = 0;
    long n;
    bool done = false;
    uint64_t disclosed = 0, bob_leak = 0, errors = 0, fp = 0;
    qkd_qber_estimate est;
    qkd_confirm_outcome outcome;
    qkd_secret_length sl;
    if (buf == NULL) return 1;

    TRY("alice", qkd_simulate(bits, qber, QKD_ERROR_MODEL_IID, &SIM_SEED, &mine, &theirs, NULL));
    qkd_block_free(theirs); /* Bob's half lives in the other process */

    /* Estimation: disclose a sample chosen by a fresh public seed. */
    TRY("alice", qkd_random_seed(seed));
    qkd_result rc = qkd_sample_disclose(mine, bits / 10, seed, buf, cap, &len, &key);
    if (rc == QKD_ERR_BUFFER_TOO_SHORT) { /* len holds the size needed */
        uint8_t *grown = realloc(buf, len);
        if (grown == NULL) return 1;
        buf = grown;
        cap = len;
        rc = qkd_sample_disclose(mine, bits / 10, seed, buf, cap, &len, &key);
    }
    if (rc != QKD_OK) return fail("alice", "qkd_sample_disclose", rc);
    if (send_msg(fd, buf, len)) return 1;
    if (recv_msg(fd, &buf, &cap) != 8) return 1;
    for (int i = 0; i < 8; i++) errors |= (uint64_t)buf[i] << (8 * i);
    TRY("alice", qkd_qber_estimate_from_counts(bits, bits / 10, errors, EPS_PE,
                                               QKD_BOUND_HYPERGEOMETRIC, &est));

    /* Cascade: answer Bob until his Done. */
    TRY("alice", qkd_cascade_alice_new(key, &alice));
    for (;;) {
        if ((n = recv_msg(fd, &buf, &cap)) < 0) return 1;
        TRY("alice", qkd_cascade_alice_receive(alice, buf, (size_t)n));
        TRY("alice", qkd_cascade_alice_is_done(alice, &done, &disclosed));
        if (done) break;
        if (send_queued(fd, take_alice, alice, &buf, &cap)) return 1;
    }

    TRY("alice", qkd_cascade_alice_leak_bits(alice, &disclosed, &bob_leak));

    /* Confirmation. */
    TRY("alice", qkd_confirm_start(key, EPS_COR, buf, cap, &len, &confirm));
    if (send_msg(fd, buf, len)) return 1;
    if ((n = recv_msg(fd, &buf, &cap)) < 0) return 1;
    TRY("alice", qkd_confirm_finish(confirm, buf, (size_t)n, &outcome));
    if (!outcome.matched) {
        fprintf(stderr, "alice: confirmation mismatch, block discarded\n");
        return 1;
    }

    /* Secret length and amplification seed. */
    TRY("alice", size_key(&est, disclosed + bob_leak, outcome.leaked_bits, &sl));
    if (sl.bits == 0) return fprintf(stderr, "alice: no key from this block\n"), 1;
    TRY("alice", qkd_random_seed(seed));
    if (send_msg(fd, seed, sizeof seed)) return 1;
    TRY("alice", qkd_block_from_seed(seed, qkd_toeplitz_seed_bits(est.remaining_bits, sl.bits), &pa_seed));
    TRY("alice", qkd_toeplitz_hash(key, pa_seed, sl.bits, &final_key));
    fp = fingerprint(final_key);
    printf("alice: QBER %.4f (bound %.4f), %llu bits disclosed by Cascade, %u-bit tag, "
           "final key %llu bits\n",
           est.observed_qber, est.qber_upper, (unsigned long long)disclosed, outcome.leaked_bits,
           (unsigned long long)sl.bits);
    /* Test only: compare fingerprints. */
    if ((n = recv_msg(fd, &buf, &cap)) != 8) return 1;
    uint64_t bob_fp = 0;
    for (int i = 0; i < 8; i++) bob_fp |= (uint64_t)buf[i] << (8 * i);
    printf("alice: final keys %s\n", bob_fp == fp ? "identical" : "DIFFERENT");

    qkd_confirm_free(confirm);
    qkd_cascade_alice_free(alice);
    qkd_block_free(mine);
    qkd_block_free(key);
    qkd_block_free(pa_seed);
    qkd_block_free(final_key);
    free(buf);
    return bob_fp == fp ? 0 : 1;
}

static int bob_main(int fd, size_t bits, double qber) {
    qkd_block *mine = NULL, *theirs = NULL, *key = NULL, *fixed = NULL, *pa_seed = NULL,
              *final_key = NULL;
    qkd_cascade_bob *bob = NULL;
    uint8_t *buf = malloc(1 << 16), reply[64], cascade_seed[QKD_SEED_LEN];
    size_t cap = 1 << 16, rlen = 0;
    long n;
    qkd_qber_estimate est;
    qkd_cascade_stats stats;
    qkd_confirm_outcome outcome;
    qkd_secret_length sl;
    if (buf == NULL) return 1;

    TRY("bob", qkd_simulate(bits, qber, QKD_ERROR_MODEL_IID, &SIM_SEED, &theirs, &mine, NULL));
    qkd_block_free(theirs);

    if ((n = recv_msg(fd, &buf, &cap)) < 0) return 1;
    TRY("bob", qkd_sample_compare(mine, buf, (size_t)n, EPS_PE, QKD_BOUND_HYPERGEOMETRIC, &est, &key));
    {
        uint8_t e[8];
        for (int i = 0; i < 8; i++) e[i] = (uint8_t)(est.errors >> (8 * i));
        if (send_msg(fd, e, 8)) return 1;
    }

    TRY("bob", qkd_random_seed(cascade_seed));
    TRY("bob", qkd_cascade_bob_new(key, NULL, est.qber_upper, cascade_seed, &bob));
    for (;;) {
        if (send_queued(fd, take_bob, bob, &buf, &cap)) return 1;
        TRY("bob", qkd_cascade_bob_stats(bob, &stats));
        if (stats.done) break;
        if ((n = recv_msg(fd, &buf, &cap)) < 0) return 1;
        TRY("bob", qkd_cascade_bob_receive(bob, buf, (size_t)n));
    }
    TRY("bob", qkd_cascade_bob_key(bob, &fixed));
    printf("bob:   %llu errors in the sample, %llu corrected by Cascade in %u round trips\n",
           (unsigned long long)est.errors, (unsigned long long)stats.corrected, stats.round_trips);

    if ((n = recv_msg(fd, &buf, &cap)) < 0) return 1;
    TRY("bob", qkd_confirm_respond(fixed, EPS_COR, buf, (size_t)n, reply, sizeof reply, &rlen, &outcome));
    if (send_msg(fd, reply, rlen)) return 1;
    if (!outcome.matched) return fprintf(stderr, "bob: confirmation mismatch\n"), 1;

    TRY("bob", size_key(&est, stats.disclosed_bits + stats.bob_leak_bits, outcome.leaked_bits, &sl));
    if ((n = recv_msg(fd, &buf, &cap)) != QKD_SEED_LEN) return 1;
    TRY("bob", qkd_block_from_seed(buf, qkd_toeplitz_seed_bits(est.remaining_bits, sl.bits), &pa_seed));
    TRY("bob", qkd_toeplitz_hash(fixed, pa_seed, sl.bits, &final_key));
    {
        uint64_t fp = fingerprint(final_key);
        uint8_t e[8];
        for (int i = 0; i < 8; i++) e[i] = (uint8_t)(fp >> (8 * i));
        if (send_msg(fd, e, 8)) return 1;
    }
    qkd_cascade_bob_free(bob);
    qkd_block_free(mine);
    qkd_block_free(key);
    qkd_block_free(fixed);
    qkd_block_free(pa_seed);
    qkd_block_free(final_key);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    size_t bits = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 200000;
    double qber = argc > 2 ? strtod(argv[2], NULL) : 0.04;
    int sv[2], status = 0, alice_status;
    pid_t pid;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return perror("socketpair"), 1;
    fflush(stdout);
    pid = fork();
    if (pid < 0) return perror("fork"), 1;
    if (pid == 0) {
        close(sv[0]);
        int rc = bob_main(sv[1], bits, qber);
        close(sv[1]);
        fflush(stdout);
        _exit(rc);
    }
    close(sv[1]);
    alice_status = alice_main(sv[0], bits, qber);
    close(sv[0]);
    if (waitpid(pid, &status, 0) != pid) return perror("waitpid"), 1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bob exited abnormally (status %d)\n", status);
        return 1;
    }
    return alice_status;
}
