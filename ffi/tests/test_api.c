/* C tests of libqkd: bad arguments (NULL, short buffers, wrong handle kinds, garbage message
 * bytes) must give result codes, never a crash; and a full run through the C API must give
 * equal final keys on both sides. Built with -std=c11 -Wall -Wextra -Werror and run under
 * AddressSanitizer/UBSan and valgrind by scripts/test-c.sh. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qkd.h"

static int passed, failed;

static const char *detail(void) {
    static char buf[1024];
    size_t len = 0;
    if (qkd_last_error_message(buf, sizeof buf, &len) != QKD_OK) return "(detail too long)";
    return buf;
}

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (cond) {                                                                       \
            passed++;                                                                     \
        } else {                                                                          \
            failed++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                 \
    } while (0)

#define CHECK_RC(call, want)                                                              \
    do {                                                                                  \
        qkd_result rc_ = (call);                                                          \
        if (rc_ == (qkd_result)(want)) {                                                  \
            passed++;                                                                     \
        } else {                                                                          \
            failed++;                                                                     \
            fprintf(stderr, "%s:%d: %s returned %u (%s), expected %s; detail: %s\n",      \
                    __FILE__, __LINE__, #call, (unsigned)rc_, qkd_result_message(rc_),    \
                    #want, detail());                                                     \
        }                                                                                 \
    } while (0)

/* xorshift64*: deterministic garbage. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static const uint8_t SEED_A[QKD_SEED_LEN] = {1, 2, 3};
static const uint8_t SEED_B[QKD_SEED_LEN] = {4, 5, 6};

static qkd_block *block_of(const uint8_t *bytes, size_t len, size_t bits) {
    qkd_block *b = NULL;
    CHECK_RC(qkd_block_from_bytes(bytes, len, bits, &b), QKD_OK);
    return b;
}

static void test_version_and_messages(void) {
    CHECK(qkd_version() != NULL && strcmp(qkd_version(), QKD_VERSION_STRING) == 0);
    char parts[64];
    snprintf(parts, sizeof parts, "%d.%d.%d", QKD_VERSION_MAJOR, QKD_VERSION_MINOR,
             QKD_VERSION_PATCH);
    CHECK(strcmp(parts, QKD_VERSION_STRING) == 0);
    CHECK(strcmp(qkd_result_message(QKD_OK), "success") == 0);
    for (unsigned code = 0; code <= QKD_ERR_IN_PROGRESS; code++) {
        const char *m = qkd_result_message(code);
        CHECK(m != NULL && strlen(m) > 0 && strcmp(m, "unknown result code") != 0);
    }
    CHECK(strcmp(qkd_result_message(12345), "unknown result code") == 0);
}

static void test_null_arguments(void) {
    qkd_block *b = NULL, *a = NULL;
    size_t n = 0;
    uint8_t buf[64];
    qkd_qber_estimate est;
    qkd_entropy_report rep;
    qkd_secret_length sl;
    qkd_finite_key_input in = {1000, 100, 0.01, 100, 20, 1, 1e-10, 1e-15, 1.0};
    qkd_cascade_alice *alice = NULL;
    qkd_cascade_bob *bob = NULL;
    qkd_confirm *conf = NULL;
    qkd_confirm_outcome outcome;
    qkd_cascade_stats stats;
    bool done = false;
    uint32_t t = 0;
    double d = 0;

    CHECK_RC(qkd_block_from_bytes(NULL, 1, 8, &b), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_block_from_bytes(buf, 1, 8, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK(strstr(detail(), "out") != NULL);
    CHECK_RC(qkd_block_from_bytes(NULL, 0, 0, &b), QKD_OK); /* empty block */
    CHECK_RC(qkd_block_len(b, &n), QKD_OK);
    CHECK(n == 0);
    qkd_block_free(b);
    b = NULL;
    CHECK_RC(qkd_block_len(NULL, &n), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_block_to_bytes(NULL, buf, sizeof buf, &n), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_block_random(8, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_block_from_seed(NULL, 8, &b), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_block_clone(NULL, &b), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_block_hamming_distance(NULL, NULL, &n), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_random_seed(NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_simulate(100, 0.1, QKD_ERROR_MODEL_IID, NULL, NULL, &b, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_sample_disclose(NULL, 10, SEED_A, buf, sizeof buf, &n, &b), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_sample_compare(NULL, buf, 4, 0.1, QKD_BOUND_HYPERGEOMETRIC, &est, &b), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_qber_upper_bound(100, 10, 1, 0.1, QKD_BOUND_SERFLING, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_qber_estimate_from_counts(100, 10, 1, 0.1, QKD_BOUND_SERFLING, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_entropy_assess(NULL, 100, QKD_ENTROPY_DEFAULT_FALSE_ALARM, &rep), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_entropy_assess(buf, sizeof buf, QKD_ENTROPY_DEFAULT_FALSE_ALARM, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_entropy_assess_block(NULL, QKD_ENTROPY_DEFAULT_FALSE_ALARM, &rep), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_secret_length_bb84(NULL, &sl), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_secret_length_bb84(&in, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_toeplitz_hash(NULL, NULL, 1, &b), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_alice_new(NULL, &alice), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_bob_new(NULL, NULL, 0.05, SEED_A, &bob), QKD_ERR_NULL_ARGUMENT);
    a = block_of(buf, sizeof buf, 512);
    CHECK_RC(qkd_cascade_bob_new(a, NULL, 0.05, NULL, &bob), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_bob_new(a, NULL, 0.05, SEED_A, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_alice_receive(NULL, buf, 4), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_bob_receive(NULL, buf, 4), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_alice_take_message(NULL, buf, sizeof buf, &n), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_bob_take_message(NULL, buf, sizeof buf, &n), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_alice_is_done(NULL, &done, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_bob_stats(NULL, &stats), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_bob_key(NULL, &b), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_cascade_loopback(a, NULL, NULL, 0.05, SEED_A, &b, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_confirm_tag_bits(1e-10, 1000, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_confirm_start(NULL, 1e-10, buf, sizeof buf, &n, &conf), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_confirm_finish(NULL, buf, 4, &outcome), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_confirm_respond(a, 1e-10, NULL, 4, buf, sizeof buf, &n, &outcome), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_last_error_message(NULL, 0, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK(b == NULL && alice == NULL && bob == NULL && conf == NULL);
    (void)t;
    (void)d;
    qkd_block_free(a);
    /* Freeing NULL is a no-op. */
    qkd_block_free(NULL);
    qkd_cascade_alice_free(NULL);
    qkd_cascade_bob_free(NULL);
    qkd_confirm_free(NULL);
}

static void test_invalid_values(void) {
    qkd_block *a = NULL, *b = NULL;
    uint8_t bytes[4] = {0xff, 0, 0, 0};
    double d = 0;
    qkd_secret_length sl;
    qkd_finite_key_input in = {1000000, 100000, 0.02, 160000, 51, 41, 1e-10, 1e-15, 1.0};
    uint32_t t = 0;
    CHECK_RC(qkd_block_from_bytes(bytes, 1, 9, &a), QKD_ERR_LENGTH_MISMATCH);
    CHECK_RC(qkd_simulate(1000, 0.6, QKD_ERROR_MODEL_IID, NULL, &a, &b, NULL), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_simulate(1000, 0.1, 99, NULL, &a, &b, NULL), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_simulate(0, 0.1, QKD_ERROR_MODEL_IID, NULL, &a, &b, NULL), QKD_ERR_INVALID_ARGUMENT);
    CHECK(a == NULL && b == NULL);
    CHECK_RC(qkd_qber_upper_bound(100, 100, 1, 0.1, QKD_BOUND_SERFLING, &d), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_qber_upper_bound(100, 10, 11, 0.1, QKD_BOUND_SERFLING, &d), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_qber_upper_bound(100, 10, 1, 1.5, QKD_BOUND_SERFLING, &d), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_qber_upper_bound(100, 10, 1, 0.1, 7, &d), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_secret_length_bb84(&in, &sl), QKD_OK);
    CHECK(sl.bits > 0 && sl.raw_bits >= (double)sl.bits);
    in.qber = 0.7;
    CHECK_RC(qkd_secret_length_bb84(&in, &sl), QKD_ERR_INVALID_ARGUMENT);
    in.qber = 0.02;
    in.length_choices = 0;
    CHECK_RC(qkd_secret_length_bb84(&in, &sl), QKD_ERR_INVALID_ARGUMENT);
    in.length_choices = 41;
    in.preparation_quality = 0.0;
    CHECK_RC(qkd_secret_length_bb84(&in, &sl), QKD_ERR_INVALID_ARGUMENT);
    {
        double rung = 0;
        uint32_t rungs = 0;
        CHECK_RC(qkd_qber_ladder_rung(0.11, 0.02, &rung, &rungs), QKD_OK);
        CHECK(rungs == 41 && rung >= 0.02 && rung < 0.0204);
        CHECK_RC(qkd_qber_ladder_rung(0.11, 0.2, &rung, &rungs), QKD_OK);
        CHECK(rung != rung); /* NaN: above the top rung, the block aborts */
        CHECK_RC(qkd_qber_ladder_rung(0.7, 0.02, &rung, &rungs), QKD_ERR_INVALID_ARGUMENT);
        CHECK_RC(qkd_qber_ladder_rung(0.11, 0.02, NULL, &rungs), QKD_ERR_NULL_ARGUMENT);
    }
    CHECK_RC(qkd_confirm_tag_bits(0.0, 1000, &t), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_confirm_tag_bits(1e-10, 1000, &t), QKD_OK);
    CHECK(t > 30 && t <= 64);
    a = block_of(bytes, 4, 32);
    CHECK_RC(qkd_cascade_bob_new(a, "no-such-variant", 0.05, SEED_A, (qkd_cascade_bob **)&b), QKD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(detail(), "option8") != NULL); /* the detail lists the known variants */
    CHECK_RC(qkd_cascade_bob_new(a, NULL, 0.0, SEED_A, (qkd_cascade_bob **)&b), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_toeplitz_hash(a, a, 32, &b), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_toeplitz_hash(a, a, 16, &b), QKD_ERR_LENGTH_MISMATCH);
    CHECK(b == NULL);
    CHECK(qkd_toeplitz_seed_bits(32, 16) == 47);
    qkd_block_free(a);
}

static void test_short_buffers(void) {
    uint8_t bytes[3] = {0xA5, 0x5A, 0xFF};
    uint8_t out[8] = {0};
    size_t n = 0;
    char small[4];
    qkd_block *key = NULL, *rest = NULL, *a = NULL, *b = NULL;
    qkd_cascade_bob *bob = NULL;
    qkd_confirm *conf = NULL;
    uint64_t seed = 7;

    qkd_block *blk = block_of(bytes, 3, 20);
    CHECK_RC(qkd_block_to_bytes(blk, out, 2, &n), QKD_ERR_BUFFER_TOO_SHORT);
    CHECK(n == 3 && out[0] == 0);
    CHECK_RC(qkd_block_to_bytes(blk, NULL, 0, &n), QKD_ERR_BUFFER_TOO_SHORT);
    CHECK(n == 3);
    CHECK_RC(qkd_block_to_bytes(blk, out, sizeof out, &n), QKD_OK);
    CHECK(n == 3 && out[0] == 0xA5 && out[1] == 0x5A && out[2] == 0x0F);
    qkd_block_free(blk);

    /* The detail string: too short a buffer reports length + 1. */
    CHECK_RC(qkd_block_len(NULL, &n), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_last_error_message(small, sizeof small, &n), QKD_ERR_BUFFER_TOO_SHORT);
    CHECK(n == strlen("argument `block` is NULL") + 1);

    CHECK_RC(qkd_simulate(4096, 0.05, QKD_ERROR_MODEL_IID, &seed, &a, &b, NULL), QKD_OK);
    CHECK_RC(qkd_sample_disclose(a, 400, SEED_A, out, sizeof out, &n, &rest), QKD_ERR_BUFFER_TOO_SHORT);
    CHECK(n > sizeof out && rest == NULL);

    CHECK_RC(qkd_cascade_bob_new(b, NULL, 0.05, SEED_B, &bob), QKD_OK);
    CHECK_RC(qkd_cascade_bob_take_message(bob, out, 1, &n), QKD_ERR_BUFFER_TOO_SHORT);
    {
        size_t need = n;
        uint8_t *hello = malloc(need);
        CHECK_RC(qkd_cascade_bob_take_message(bob, hello, need, &n), QKD_OK); /* still queued */
        CHECK(n == need);
        CHECK_RC(qkd_cascade_bob_take_message(bob, hello, need, &n), QKD_OK); /* now empty */
        CHECK(n == 0);
        free(hello);
    }
    CHECK_RC(qkd_confirm_start(a, 1e-12, out, 2, &n, &conf), QKD_ERR_BUFFER_TOO_SHORT);
    CHECK(conf == NULL && n > 2);
    qkd_cascade_bob_free(bob);
    qkd_block_free(key);
    qkd_block_free(a);
    qkd_block_free(b);
}

static void test_wrong_handles(void) {
    uint8_t bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t buf[256];
    size_t n = 0;
    bool done = false;
    qkd_cascade_stats stats;
    qkd_block *blk = block_of(bytes, 8, 64), *out = NULL;
    qkd_cascade_alice *alice = NULL;
    qkd_cascade_bob *bob = NULL;
    qkd_confirm *conf = NULL;
    CHECK_RC(qkd_cascade_alice_new(blk, &alice), QKD_OK);
    CHECK_RC(qkd_cascade_bob_new(blk, "option7", 0.05, SEED_A, &bob), QKD_OK);
    CHECK_RC(qkd_confirm_start(blk, 1e-10, buf, sizeof buf, &n, &conf), QKD_OK);

    /* A Bob where an Alice is expected, and every other mix-up. */
    CHECK_RC(qkd_cascade_alice_receive((qkd_cascade_alice *)bob, buf, n), QKD_ERR_WRONG_HANDLE);
    CHECK(strstr(detail(), "qkd_cascade_bob") != NULL);
    CHECK_RC(qkd_cascade_alice_take_message((qkd_cascade_alice *)bob, buf, sizeof buf, &n), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_cascade_alice_is_done((qkd_cascade_alice *)blk, &done, NULL), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_cascade_bob_receive((qkd_cascade_bob *)alice, buf, 4), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_cascade_bob_stats((qkd_cascade_bob *)conf, &stats), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_cascade_bob_key((qkd_cascade_bob *)blk, &out), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_block_len((qkd_block *)alice, &n), QKD_ERR_WRONG_HANDLE);
    CHECK(strstr(detail(), "qkd_cascade_alice") != NULL);
    CHECK_RC(qkd_block_to_bytes((qkd_block *)bob, buf, sizeof buf, &n), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_toeplitz_hash(blk, (qkd_block *)conf, 8, &out), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_entropy_assess_block((qkd_block *)conf, QKD_ENTROPY_DEFAULT_FALSE_ALARM, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_confirm_finish((qkd_confirm *)alice, buf, 4, NULL), QKD_ERR_NULL_ARGUMENT);
    {
        qkd_confirm_outcome o;
        CHECK_RC(qkd_confirm_finish((qkd_confirm *)alice, buf, 4, &o), QKD_ERR_WRONG_HANDLE);
    }
    /* A pointer to something that is not a handle at all (aligned, readable). */
    {
        uint64_t fake[4] = {0x0123456789abcdefull, 0, 0, 0};
        CHECK_RC(qkd_block_len((qkd_block *)fake, &n), QKD_ERR_WRONG_HANDLE);
        CHECK(strstr(detail(), "not a live qkd handle") != NULL);
        qkd_block_free((qkd_block *)fake); /* refused: nothing happens */
        CHECK(fake[0] == 0x0123456789abcdefull);
    }
    /* Freeing with the wrong free function does nothing; the right one frees. */
    qkd_block_free((qkd_block *)alice);
    qkd_cascade_alice_free((qkd_cascade_alice *)bob);
    qkd_cascade_bob_free((qkd_cascade_bob *)conf);
    qkd_confirm_free((qkd_confirm *)blk);
    CHECK_RC(qkd_cascade_alice_is_done(alice, &done, NULL), QKD_OK);
    CHECK(out == NULL);
    qkd_cascade_alice_free(alice);
    qkd_cascade_bob_free(bob);
    qkd_confirm_free(conf);
    qkd_block_free(blk);
}

static void fill_garbage(uint8_t *buf, size_t len) {
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)next_u64();
}

static int is_protocol_error(qkd_result r) {
    return r == QKD_ERR_MALFORMED_MESSAGE || r == QKD_ERR_UNEXPECTED_MESSAGE ||
           r == QKD_ERR_LENGTH_MISMATCH || r == QKD_ERR_INVALID_ARGUMENT;
}

static void test_garbage_messages(void) {
    uint64_t seed = 11;
    qkd_block *a = NULL, *b = NULL, *rest = NULL;
    uint8_t garbage[300], msg[4096], hello[4096];
    size_t n = 0, hello_len = 0, msg_len = 0;
    qkd_qber_estimate est;
    qkd_confirm_outcome o;
    int crashes_avoided = 0;
    CHECK_RC(qkd_simulate(2048, 0.05, QKD_ERROR_MODEL_IID, &seed, &a, &b, NULL), QKD_OK);

    /* Valid messages to mutate. */
    {
        qkd_cascade_bob *bob = NULL;
        CHECK_RC(qkd_cascade_bob_new(b, NULL, 0.05, SEED_B, &bob), QKD_OK);
        CHECK_RC(qkd_cascade_bob_take_message(bob, hello, sizeof hello, &hello_len), QKD_OK);
        qkd_cascade_bob_free(bob);
        CHECK_RC(qkd_sample_disclose(a, 200, SEED_A, msg, sizeof msg, &msg_len, &rest), QKD_OK);
        qkd_block_free(rest);
        rest = NULL;
    }

    for (int iter = 0; iter < 300; iter++) {
        size_t len = (size_t)(next_u64() % sizeof garbage);
        qkd_result r;
        qkd_cascade_alice *alice = NULL;
        qkd_cascade_bob *bob = NULL;
        fill_garbage(garbage, len);
        /* Alice fed garbage as Bob's first message. */
        CHECK_RC(qkd_cascade_alice_new(a, &alice), QKD_OK);
        r = qkd_cascade_alice_receive(alice, garbage, len);
        CHECK(is_protocol_error(r));
        /* Poisoned afterwards: even the valid hello is refused. */
        CHECK_RC(qkd_cascade_alice_receive(alice, hello, hello_len), QKD_ERR_UNEXPECTED_MESSAGE);
        qkd_cascade_alice_free(alice);
        /* Bob fed garbage instead of Alice's parities. */
        CHECK_RC(qkd_cascade_bob_new(b, NULL, 0.05, SEED_B, &bob), QKD_OK);
        CHECK_RC(qkd_cascade_bob_take_message(bob, garbage + 0, 0, &n), QKD_ERR_BUFFER_TOO_SHORT);
        {
            uint8_t tmp[4096];
            CHECK_RC(qkd_cascade_bob_take_message(bob, tmp, sizeof tmp, &n), QKD_OK);
        }
        r = qkd_cascade_bob_receive(bob, garbage, len);
        CHECK(is_protocol_error(r));
        qkd_cascade_bob_free(bob);
        /* Estimation and confirmation. */
        CHECK(is_protocol_error(qkd_sample_compare(b, garbage, len, 1e-10, QKD_BOUND_HYPERGEOMETRIC, &est, &rest)));
        CHECK(rest == NULL);
        CHECK(is_protocol_error(qkd_confirm_respond(b, 1e-10, garbage, len, msg + 0, 0, &n, &o)));
        crashes_avoided++;
    }
    /* Bit flips of valid messages: any outcome but a crash; what is accepted is consistent. */
    for (int iter = 0; iter < 300; iter++) {
        uint8_t m1[4096], m2[4096];
        qkd_cascade_alice *alice = NULL;
        qkd_result r;
        memcpy(m1, hello, hello_len);
        memcpy(m2, msg, msg_len);
        m1[next_u64() % hello_len] ^= (uint8_t)(1u << (next_u64() % 8));
        m2[next_u64() % msg_len] ^= (uint8_t)(1u << (next_u64() % 8));
        CHECK_RC(qkd_cascade_alice_new(a, &alice), QKD_OK);
        r = qkd_cascade_alice_receive(alice, m1, hello_len);
        CHECK(r == QKD_OK || is_protocol_error(r));
        qkd_cascade_alice_free(alice);
        r = qkd_sample_compare(b, m2, msg_len, 1e-10, QKD_BOUND_HYPERGEOMETRIC, &est, &rest);
        CHECK(r == QKD_OK || is_protocol_error(r));
        CHECK((r == QKD_OK) == (rest != NULL));
        if (r == QKD_OK) CHECK(est.errors <= est.k);
        qkd_block_free(rest);
        rest = NULL;
    }
    CHECK(crashes_avoided == 300);
    qkd_block_free(a);
    qkd_block_free(b);
}

/* Cascade with one bit of one message flipped in transit, at a random point of the run: every
 * call returns a code (never a crash), and a run that still completes without an error either
 * leaves Bob's key equal to Alice's or is caught by confirmation. */
static void test_corrupted_in_transit(void) {
    uint64_t seed = 21;
    qkd_block *a = NULL, *b = NULL;
    static uint8_t buf[1 << 16];
    int completed = 0, refused = 0;
    CHECK_RC(qkd_simulate(4096, 0.04, QKD_ERROR_MODEL_IID, &seed, &a, &b, NULL), QKD_OK);
    for (int run = 0; run < 40; run++) {
        qkd_cascade_alice *alice = NULL;
        qkd_cascade_bob *bob = NULL;
        qkd_cascade_stats stats;
        size_t len = 0;
        int step = 0, flip_at = (int)(next_u64() % 12), failed_run = 0;
        uint8_t cseed[QKD_SEED_LEN] = {(uint8_t)run};
        CHECK_RC(qkd_cascade_alice_new(a, &alice), QKD_OK);
        CHECK_RC(qkd_cascade_bob_new(b, "option7", 0.04, cseed, &bob), QKD_OK);
        for (;;) {
            qkd_result r;
            if (qkd_cascade_bob_take_message(bob, buf, sizeof buf, &len) != QKD_OK) break;
            if (step++ == flip_at && len > 0) buf[next_u64() % len] ^= (uint8_t)(1u << (next_u64() % 8));
            r = qkd_cascade_alice_receive(alice, buf, len);
            if (r != QKD_OK) {
                CHECK(is_protocol_error(r));
                failed_run = 1;
                break;
            }
            CHECK_RC(qkd_cascade_bob_stats(bob, &stats), QKD_OK);
            if (stats.done) break;
            CHECK_RC(qkd_cascade_alice_take_message(alice, buf, sizeof buf, &len), QKD_OK);
            if (step++ == flip_at && len > 0) buf[next_u64() % len] ^= (uint8_t)(1u << (next_u64() % 8));
            r = qkd_cascade_bob_receive(bob, buf, len);
            if (r != QKD_OK) {
                CHECK(is_protocol_error(r));
                failed_run = 1;
                break;
            }
        }
        if (failed_run) {
            refused++;
        } else {
            qkd_block *fixed = NULL;
            qkd_confirm *conf = NULL;
            qkd_confirm_outcome oa, ob;
            uint8_t cmsg[64], creply[64];
            size_t clen = 0, rlen = 0, diff = 0;
            CHECK_RC(qkd_cascade_bob_key(bob, &fixed), QKD_OK);
            CHECK_RC(qkd_block_hamming_distance(a, fixed, &diff), QKD_OK);
            CHECK_RC(qkd_confirm_start(a, 1e-12, cmsg, sizeof cmsg, &clen, &conf), QKD_OK);
            CHECK_RC(qkd_confirm_respond(fixed, 1e-12, cmsg, clen, creply, sizeof creply, &rlen, &ob), QKD_OK);
            CHECK_RC(qkd_confirm_finish(conf, creply, rlen, &oa), QKD_OK);
            CHECK(oa.matched == (diff == 0) && oa.matched == ob.matched);
            completed++;
            qkd_confirm_free(conf);
            qkd_block_free(fixed);
        }
        qkd_cascade_alice_free(alice);
        qkd_cascade_bob_free(bob);
    }
    CHECK(completed + refused == 40);
    qkd_block_free(a);
    qkd_block_free(b);
}

static void test_protocol_order(void) {
    uint64_t seed = 3;
    qkd_block *a = NULL, *b = NULL;
    qkd_cascade_alice *alice = NULL;
    qkd_cascade_bob *bob = NULL;
    uint8_t hello[4096], reply[1 << 16];
    size_t hello_len = 0, reply_len = 0;
    CHECK_RC(qkd_simulate(4096, 0.03, QKD_ERROR_MODEL_IID, &seed, &a, &b, NULL), QKD_OK);
    CHECK_RC(qkd_cascade_alice_new(a, &alice), QKD_OK);
    CHECK_RC(qkd_cascade_bob_new(b, NULL, 0.03, SEED_A, &bob), QKD_OK);
    /* Bob must send his hello before receiving. */
    CHECK_RC(qkd_cascade_bob_receive(bob, hello, 1), QKD_ERR_UNEXPECTED_MESSAGE);
    CHECK_RC(qkd_cascade_bob_take_message(bob, hello, sizeof hello, &hello_len), QKD_OK);
    CHECK_RC(qkd_cascade_alice_receive(alice, hello, hello_len), QKD_OK);
    /* A second message before Alice's reply was taken. */
    CHECK_RC(qkd_cascade_alice_receive(alice, hello, hello_len), QKD_ERR_UNEXPECTED_MESSAGE);
    CHECK_RC(qkd_cascade_alice_take_message(alice, reply, sizeof reply, &reply_len), QKD_OK);
    CHECK(reply_len > 0);
    /* The hello again, now out of turn: protocol error, Alice poisoned. */
    CHECK_RC(qkd_cascade_alice_receive(alice, hello, hello_len), QKD_ERR_UNEXPECTED_MESSAGE);
    CHECK_RC(qkd_cascade_alice_receive(alice, hello, hello_len), QKD_ERR_UNEXPECTED_MESSAGE);
    CHECK(strstr(detail(), "already failed") != NULL);
    /* Bob's hello to an Alice with a key of another length. */
    {
        qkd_cascade_alice *other = NULL;
        uint8_t k[16] = {0};
        qkd_block *short_key = block_of(k, 16, 128);
        CHECK_RC(qkd_cascade_alice_new(short_key, &other), QKD_OK);
        CHECK_RC(qkd_cascade_alice_receive(other, hello, hello_len), QKD_ERR_LENGTH_MISMATCH);
        qkd_cascade_alice_free(other);
        qkd_block_free(short_key);
    }
    qkd_cascade_alice_free(alice);
    qkd_cascade_bob_free(bob);
    qkd_block_free(a);
    qkd_block_free(b);
}

/* Runs Cascade between two handles in this process through C buffers. */
static int run_cascade(qkd_cascade_alice *alice, qkd_cascade_bob *bob) {
    static uint8_t buf[1 << 20];
    size_t len = 0;
    qkd_cascade_stats stats;
    bool done = false;
    for (int guard = 0; guard < 100000; guard++) {
        if (qkd_cascade_bob_take_message(bob, buf, sizeof buf, &len) != QKD_OK) return -1;
        if (qkd_cascade_alice_receive(alice, buf, len) != QKD_OK) return -2;
        if (qkd_cascade_bob_stats(bob, &stats) != QKD_OK) return -3;
        if (stats.done) {
            if (qkd_cascade_alice_is_done(alice, &done, NULL) != QKD_OK || !done) return -4;
            return 0;
        }
        if (qkd_cascade_alice_take_message(alice, buf, sizeof buf, &len) != QKD_OK) return -5;
        if (qkd_cascade_bob_receive(bob, buf, len) != QKD_OK) return -6;
    }
    return -7;
}

static void test_end_to_end(void) {
    const size_t n = 100000, k = 10000;
    uint64_t seed = 2026;
    qkd_sim_report sim;
    qkd_block *a = NULL, *b = NULL, *ar = NULL, *br = NULL, *bc = NULL, *loop_key = NULL;
    qkd_block *pa_seed = NULL, *fa = NULL, *fb = NULL;
    uint8_t *msg = NULL;
    size_t len = 0, diff = 99;
    qkd_qber_estimate est;
    qkd_cascade_alice *alice = NULL;
    qkd_cascade_bob *bob = NULL;
    qkd_cascade_stats stats;
    qkd_cascade_report loop;
    uint64_t alice_disclosed = 0;
    bool done = false;
    qkd_confirm *conf = NULL;
    qkd_confirm_outcome oa, ob;
    uint8_t cmsg[64], creply[64];
    size_t clen = 0, rlen = 0;
    qkd_secret_length sl;
    qkd_entropy_report rep;

    CHECK_RC(qkd_simulate(n, 0.03, QKD_ERROR_MODEL_IID, &seed, &a, &b, &sim), QKD_OK);
    CHECK(sim.bits == n && sim.errors == 3000 && sim.model == QKD_ERROR_MODEL_IID);

    CHECK_RC(qkd_sample_disclose(a, k, SEED_A, NULL, 0, &len, &ar), QKD_ERR_BUFFER_TOO_SHORT);
    msg = malloc(len);
    CHECK_RC(qkd_sample_disclose(a, k, SEED_A, msg, len, &len, &ar), QKD_OK);
    CHECK_RC(qkd_sample_compare(b, msg, len, 1e-10, QKD_BOUND_HYPERGEOMETRIC, &est, &br), QKD_OK);
    free(msg);
    CHECK(est.n == n && est.k == k && est.remaining_bits == n - k);
    CHECK(est.observed_qber > 0.02 && est.observed_qber < 0.04);
    CHECK(est.qber_upper > est.observed_qber && est.qber_upper < 0.05);

    CHECK_RC(qkd_cascade_alice_new(ar, &alice), QKD_OK);
    CHECK_RC(qkd_cascade_bob_new(br, NULL, est.qber_upper, SEED_B, &bob), QKD_OK);
    CHECK(run_cascade(alice, bob) == 0);
    CHECK_RC(qkd_cascade_bob_stats(bob, &stats), QKD_OK);
    CHECK_RC(qkd_cascade_alice_is_done(alice, &done, &alice_disclosed), QKD_OK);
    CHECK(done && stats.done && alice_disclosed == stats.disclosed_bits);
    {
        uint64_t la = 0, lb = 0;
        CHECK_RC(qkd_cascade_alice_leak_bits(alice, &la, &lb), QKD_OK);
        CHECK(la == stats.disclosed_bits && lb == stats.bob_leak_bits && lb >= la);
        CHECK_RC(qkd_cascade_alice_leak_bits(alice, NULL, &lb), QKD_ERR_NULL_ARGUMENT);
    }
    CHECK_RC(qkd_cascade_bob_key(bob, &bc), QKD_OK);
    CHECK_RC(qkd_block_hamming_distance(ar, bc, &diff), QKD_OK);
    CHECK(diff == 0);
    /* After Done, Bob accepts nothing more. */
    CHECK_RC(qkd_cascade_bob_receive(bob, cmsg, 1), QKD_ERR_UNEXPECTED_MESSAGE);

    /* The loopback convenience gives the same run. */
    CHECK_RC(qkd_cascade_loopback(ar, br, NULL, est.qber_upper, SEED_B, &loop_key, &loop), QKD_OK);
    CHECK(loop.stats.disclosed_bits == stats.disclosed_bits && loop.residual_errors == 0);
    CHECK(loop.stats.round_trips == stats.round_trips && loop.n == n - k);
    CHECK(loop.efficiency > 1.0 && loop.efficiency < 1.5);
    CHECK_RC(qkd_block_hamming_distance(loop_key, bc, &diff), QKD_OK);
    CHECK(diff == 0);

    /* Confirmation. */
    CHECK_RC(qkd_confirm_start(ar, 1e-15, cmsg, sizeof cmsg, &clen, &conf), QKD_OK);
    CHECK_RC(qkd_confirm_respond(bc, 1e-15, cmsg, clen, creply, sizeof creply, &rlen, &ob), QKD_OK);
    CHECK_RC(qkd_confirm_finish(conf, creply, rlen, &oa), QKD_OK);
    CHECK(oa.matched && ob.matched && oa.leaked_bits == ob.leaked_bits);
    /* A second verdict is out of turn. */
    CHECK_RC(qkd_confirm_finish(conf, creply, rlen, &oa), QKD_ERR_UNEXPECTED_MESSAGE);
    /* Bob's unreconciled key does not confirm. */
    {
        qkd_confirm_outcome bad;
        CHECK_RC(qkd_confirm_respond(br, 1e-15, cmsg, clen, creply, sizeof creply, &rlen, &bad), QKD_OK);
        CHECK(!bad.matched);
    }

    /* Secret length and amplification with a seed expanded on both sides. */
    {
        qkd_finite_key_input in = {n - k, k, est.observed_qber,
                                   stats.disclosed_bits + stats.bob_leak_bits, oa.leaked_bits, 1,
                                   1e-10, 1e-15, 1.0};
        uint8_t shared[QKD_SEED_LEN];
        size_t flen = 0;
        CHECK_RC(qkd_secret_length_bb84(&in, &sl), QKD_OK);
        CHECK(sl.bits > 10000 && sl.bits < n - k);
        CHECK_RC(qkd_random_seed(shared), QKD_OK);
        CHECK_RC(qkd_block_from_seed(shared, qkd_toeplitz_seed_bits(n - k, sl.bits), &pa_seed), QKD_OK);
        CHECK_RC(qkd_toeplitz_hash(ar, pa_seed, sl.bits, &fa), QKD_OK);
        CHECK_RC(qkd_toeplitz_hash(bc, pa_seed, sl.bits, &fb), QKD_OK);
        CHECK_RC(qkd_block_hamming_distance(fa, fb, &diff), QKD_OK);
        CHECK(diff == 0);
        CHECK_RC(qkd_block_len(fa, &flen), QKD_OK);
        CHECK(flen == sl.bits);
    }
    CHECK_RC(qkd_entropy_assess_block(fa, QKD_ENTROPY_DEFAULT_FALSE_ALARM, &rep), QKD_OK);
    CHECK(rep.verdict == QKD_VERDICT_PASS && rep.shannon_passed && rep.min_entropy_passed);

    qkd_confirm_free(conf);
    qkd_cascade_alice_free(alice);
    qkd_cascade_bob_free(bob);
    qkd_block *all[] = {a, b, ar, br, bc, loop_key, pa_seed, fa, fb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qkd_block_free(all[i]);
}

static void test_pipeline(void) {
    uint64_t seed = 77;
    qkd_block *a = NULL, *b = NULL, *key = NULL, *short_key = NULL;
    qkd_pipeline_config cfg;
    qkd_block_report r;
    size_t len = 0;
    uint8_t zeros[16] = {0};
    CHECK_RC(qkd_pipeline_config_default(NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_pipeline_config_default(&cfg), QKD_OK);
    CHECK(cfg.variant == NULL && cfg.eps_cor > 0 && cfg.max_qber > 0.1);
    cfg.sample_bits = 5000;
    CHECK_RC(qkd_simulate(100000, 0.02, QKD_ERROR_MODEL_BURST, &seed, &a, &b, NULL), QKD_OK);
    CHECK_RC(qkd_pipeline_process_block(a, b, &cfg, NULL, &key), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_pipeline_process_block(a, NULL, &cfg, &r, &key), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_pipeline_process_block(a, (qkd_block *)&cfg, &cfg, &r, &key), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_pipeline_process_block(a, b, &cfg, &r, &key), QKD_OK);
    CHECK(r.outcome == QKD_OUTCOME_KEY && r.outcome_reason[0] == 0);
    CHECK(r.raw_bits == 100000 && r.reconciled_bits == 95000 && r.residual_errors == 0);
    CHECK(r.confirmed && r.entropy_checked && r.entropy == QKD_VERDICT_PASS);
    CHECK(r.dropped_frames == 0 && r.retried_frames <= 2);
    CHECK(key != NULL);
    CHECK_RC(qkd_block_len(key, &len), QKD_OK);
    CHECK(len == r.final_bits && len > 0);
    qkd_block_free(key);
    key = NULL;
    /* The defaults (a 16384-bit sample) with a config of NULL. */
    CHECK_RC(qkd_pipeline_process_block(a, b, NULL, &r, &key), QKD_OK);
    CHECK(r.sample_bits == 16384 && r.outcome == QKD_OUTCOME_KEY);
    qkd_block_free(key);
    key = NULL;
    /* LDPC: 8 whole frames of 11520 bits in the 95000 after the sample. */
    {
        qkd_block *x = NULL, *y = NULL;
        uint64_t ldpc_seed = 78;
        uint64_t frame_bits = cfg.frame_bits;
        CHECK_RC(qkd_simulate(100000, 0.02, QKD_ERROR_MODEL_IID, &ldpc_seed, &x, &y, NULL), QKD_OK);
        cfg.variant = "ldpc-blind";
        cfg.frame_bits = 11520;
        CHECK_RC(qkd_pipeline_process_block(x, y, &cfg, &r, &key), QKD_OK);
        /* The sample's positions come from the OS CSPRNG: one that reads the QBER low may
         * plan a frame Bob cannot decode, which is dropped and charged. */
        CHECK(r.outcome == QKD_OUTCOME_KEY && r.residual_errors == 0 && r.dropped_frames < 8);
        CHECK(r.leak_alice_bits > 0 && r.errors_corrected > 0 && r.round_trips >= 1);
        qkd_block_free(key);
        key = NULL;
        cfg.frame_bits = 4000;
        CHECK_RC(qkd_pipeline_process_block(x, y, &cfg, &r, &key), QKD_ERR_INVALID_ARGUMENT);
        CHECK(strstr(detail(), "smallest LDPC frame") != NULL && key == NULL);
        cfg.variant = NULL;
        cfg.frame_bits = frame_bits;
        qkd_block_free(x);
        qkd_block_free(y);
    }
    /* Bad settings, mismatched lengths. */
    cfg.eps_sec = 2.0;
    CHECK_RC(qkd_pipeline_process_block(a, b, &cfg, &r, &key), QKD_ERR_INVALID_ARGUMENT);
    cfg.eps_sec = 1e-10;
    cfg.sample_bits = 60000;
    CHECK_RC(qkd_pipeline_process_block(a, b, &cfg, &r, &key), QKD_ERR_INVALID_ARGUMENT);
    cfg.sample_bits = 5000;
    short_key = block_of(zeros, sizeof zeros, 128);
    CHECK_RC(qkd_pipeline_process_block(a, short_key, &cfg, &r, &key), QKD_ERR_LENGTH_MISMATCH);
    CHECK(key == NULL);
    qkd_block_free(short_key);
    qkd_block_free(a);
    qkd_block_free(b);
}

struct fetch_job {
    qkd_store *store;
    int ok;
};

/* Each thread allocates and fetches its own keys from the shared store. */
static void *fetch_worker(void *arg) {
    struct fetch_job *job = arg;
    qkd_key_id ids[8];
    size_t n = 0, len = 0;
    uint8_t key[16];
    job->ok = 0;
    for (int round = 0; round < 4; round++) {
        if (qkd_store_allocate(job->store, "KME_B", "SAE_A", NULL, 0, 8, 128, 60, ids, 8, &n) != QKD_OK ||
            n != 8)
            return NULL;
        for (size_t i = 0; i < n; i++) {
            if (qkd_store_fetch(job->store, &ids[i], "SAE_A", key, sizeof key, &len) != QKD_OK ||
                len != 16)
                return NULL;
        }
    }
    job->ok = 1;
    return NULL;
}

static void test_store(void) {
    char dir[] = "/tmp/qkd-c-test-XXXXXX";
    qkd_store *store = NULL, *again = NULL;
    qkd_block *material = NULL;
    qkd_store_block_info info;
    qkd_key_id ids[4], parsed;
    size_t n = 0, len = 0;
    uint64_t avail = 0;
    uint8_t all[1024], key[64];
    char text[QKD_KEY_ID_STR_LEN];
    const char *slaves[] = {"SAE_B", "SAE_C"};
    CHECK(mkdtemp(dir) != NULL);
    CHECK_RC(qkd_store_open(NULL, &store), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_store_open(dir, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_store_open(dir, &store), QKD_OK);
    CHECK_RC(qkd_store_open(dir, &again), QKD_ERR_STORE);
    CHECK(again == NULL && strstr(detail(), "already open") != NULL);

    CHECK_RC(qkd_block_from_seed(SEED_A, 8192, &material), QKD_OK);
    CHECK_RC(qkd_block_to_bytes(material, all, sizeof all, &len), QKD_OK);
    CHECK_RC(qkd_store_append(store, "KME_B", "b1", material, 0.03, &info), QKD_OK);
    CHECK(info.len_bits == 8192 && info.usable_bits == 8192);
    CHECK_RC(qkd_store_append(store, "KME_B", "b1", material, 0.03, NULL), QKD_ERR_KEY_UNAVAILABLE);
    CHECK_RC(qkd_store_append(store, "", "b2", material, 0.03, NULL), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_store_append(store, "KME_B", NULL, material, 0.03, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_store_available_bits(store, "KME_B", &avail), QKD_OK);
    CHECK(avail == 8192);

    CHECK_RC(qkd_store_allocate(store, "KME_B", "SAE_A", slaves, 2, 4, 256, 60, ids, 3, &n), QKD_ERR_BUFFER_TOO_SHORT);
    CHECK(n == 4);
    CHECK_RC(qkd_store_allocate(store, "KME_B", "SAE_A", NULL, 2, 4, 256, 60, ids, 4, &n), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_store_allocate(store, "KME_B", "SAE_A", slaves, 2, 4, 100, 60, ids, 4, &n), QKD_ERR_INVALID_ARGUMENT);
    CHECK_RC(qkd_store_allocate(store, "KME_B", "SAE_A", slaves, 2, 1000, 256, 60, NULL, 0, &n), QKD_ERR_BUFFER_TOO_SHORT);
    CHECK_RC(qkd_store_allocate(store, "KME_B", "SAE_A", slaves, 2, 4, 256, 60, ids, 4, &n), QKD_OK);
    CHECK(n == 4);
    CHECK_RC(qkd_store_available_bits(store, "KME_B", &avail), QKD_OK);
    CHECK(avail == 8192 - 4 * 256);
    for (size_t i = 0; i < n; i++) {
        int found = 0;
        CHECK_RC(qkd_store_fetch(store, &ids[i], "SAE_A", key, 8, &len), QKD_ERR_BUFFER_TOO_SHORT);
        CHECK(len == 32);
        CHECK_RC(qkd_store_fetch(store, &ids[i], "SAE_A", key, sizeof key, &len), QKD_OK);
        CHECK(len == 32);
        for (size_t w = 0; w + 32 <= sizeof all; w += 32) found |= memcmp(all + w, key, 32) == 0;
        CHECK(found); /* a 32-byte window of the appended material */
        CHECK_RC(qkd_store_fetch(store, &ids[i], "SAE_A", key, sizeof key, &len), QKD_ERR_KEY_UNAVAILABLE);
        CHECK_RC(qkd_store_fetch(store, &ids[i], "SAE_B", key, sizeof key, &len), QKD_ERR_KEY_UNAVAILABLE);
    }
    CHECK_RC(qkd_key_id_to_string(&ids[0], text, sizeof text), QKD_OK);
    CHECK(strlen(text) == 36 && text[8] == '-' && text[14] == '4');
    CHECK_RC(qkd_key_id_parse(text, &parsed), QKD_OK);
    CHECK(memcmp(&parsed, &ids[0], sizeof parsed) == 0);
    CHECK_RC(qkd_key_id_parse("zz", &parsed), QKD_ERR_INVALID_ARGUMENT);
    memset(&parsed, 0x42, sizeof parsed);
    CHECK_RC(qkd_store_fetch(store, &parsed, "SAE_A", key, sizeof key, &len), QKD_ERR_NOT_FOUND);
    CHECK_RC(qkd_store_available_bits((qkd_store *)material, "KME_B", &avail), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_block_len((qkd_block *)store, &len), QKD_ERR_WRONG_HANDLE);
    qkd_store_free((qkd_store *)material); /* wrong kind: ignored */

    /* The store handle is thread-safe: four threads allocate and fetch at once. */
    {
        pthread_t t[4];
        struct fetch_job jobs[4];
        qkd_block *more = NULL;
        CHECK_RC(qkd_block_from_seed(SEED_B, 32768, &more), QKD_OK);
        CHECK_RC(qkd_store_append(store, "KME_B", "b2", more, 0.03, NULL), QKD_OK);
        qkd_block_free(more);
        for (int i = 0; i < 4; i++) {
            jobs[i].store = store;
            CHECK(pthread_create(&t[i], NULL, fetch_worker, &jobs[i]) == 0);
        }
        for (int i = 0; i < 4; i++) {
            CHECK(pthread_join(t[i], NULL) == 0);
            CHECK(jobs[i].ok);
        }
        CHECK_RC(qkd_store_available_bits(store, "KME_B", &avail), QKD_OK);
        CHECK(avail == (uint64_t)(8192 + 32768 - 4 * 256 - 4 * 4 * 8 * 128));
    }
    qkd_store_free(store);
    /* Reopened: what was fetched stays fetched. */
    CHECK_RC(qkd_store_open(dir, &store), QKD_OK);
    CHECK_RC(qkd_store_fetch(store, &ids[0], "SAE_A", key, sizeof key, &len), QKD_ERR_KEY_UNAVAILABLE);
    qkd_store_free(store);
    qkd_block_free(material);
    {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        CHECK(system(cmd) == 0);
    }
}

/* ---- sessions ---- */

/* Moves messages between two sessions until neither has anything to send; returns the number
 * of qkd_session_handle calls that failed. */
static int drive_pair(qkd_session *alice, qkd_session *bob) {
    int failures = 0, moved = 1;
    while (moved) {
        moved = 0;
        for (int side = 0; side < 2; side++) {
            qkd_session *from = side == 0 ? alice : bob, *to = side == 0 ? bob : alice;
            qkd_buffer *buf = NULL;
            while (qkd_session_poll_transmit(from, &buf) == QKD_OK && buf != NULL) {
                const uint8_t *data = NULL;
                size_t len = 0;
                moved = 1;
                CHECK_RC(qkd_buffer_data(buf, &data, &len), QKD_OK);
                if (qkd_session_handle(to, data, len) != QKD_OK) failures++;
                qkd_buffer_free(buf);
            }
        }
    }
    return failures;
}

struct session_job {
    const qkd_link *alice_link, *bob_link;
    char id[16];
    uint64_t seed;
    int ok;
};

/* One block on this thread; the two links are shared with the other threads. */
static void *session_worker(void *arg) {
    struct session_job *job = arg;
    qkd_block *a = NULL, *b = NULL, *ka = NULL, *kb = NULL;
    qkd_session *alice = NULL, *bob = NULL;
    qkd_block_report ra, rb;
    size_t diff = 1;
    job->ok = qkd_simulate(1 << 16, 0.02, QKD_ERROR_MODEL_IID, &job->seed, &a, &b, NULL) == QKD_OK &&
              qkd_session_alice_new(job->alice_link, job->id, a, &alice) == QKD_OK &&
              qkd_session_bob_new(job->bob_link, job->id, b, &bob) == QKD_OK &&
              drive_pair(alice, bob) == 0 && qkd_session_outcome(alice, &ra, &ka) == QKD_OK &&
              qkd_session_outcome(bob, &rb, &kb) == QKD_OK && ka != NULL && kb != NULL &&
              qkd_block_hamming_distance(ka, kb, &diff) == QKD_OK && diff == 0 &&
              ra.final_bits == rb.final_bits && ra.final_bits > 0;
    qkd_session_free(alice);
    qkd_session_free(bob);
    qkd_block *all[] = {a, b, ka, kb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qkd_block_free(all[i]);
    return NULL;
}

static void test_sessions(void) {
    uint8_t psk[1024], garbage[64];
    uint64_t seed = 5, bits = 0;
    qkd_pipeline_config cfg;
    qkd_link *la = NULL, *lb = NULL, *out_link = NULL;
    qkd_session *alice = NULL, *bob = NULL, *s = NULL;
    qkd_block *a = NULL, *b = NULL, *key = NULL;
    qkd_buffer *buf = NULL;
    qkd_block_report r;
    bool done = true;
    char id[QKD_BLOCK_ID_MAX_BYTES + 1];
    size_t len = 0;
    for (size_t i = 0; i < sizeof psk; i++) psk[i] = (uint8_t)next_u64();
    CHECK_RC(qkd_pipeline_config_default(&cfg), QKD_OK);
    cfg.sample_bits = 4096;
    cfg.frame_bits = 16384;

    CHECK_RC(qkd_link_new(&cfg, psk, sizeof psk, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_link_new(&cfg, NULL, 16, &out_link), QKD_ERR_NULL_ARGUMENT);
    CHECK(out_link == NULL);
    cfg.eps_sec = 0;
    CHECK_RC(qkd_link_new(&cfg, psk, sizeof psk, &out_link), QKD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(detail(), "eps_sec") != NULL);
    cfg.eps_sec = 1e-10;
    CHECK_RC(qkd_link_new(&cfg, psk, sizeof psk, &la), QKD_OK);
    CHECK_RC(qkd_link_new(&cfg, psk, sizeof psk, &lb), QKD_OK);
    CHECK_RC(qkd_link_auth_available_bits(la, &bits), QKD_OK);
    CHECK(bits == 8 * sizeof psk);
    CHECK_RC(qkd_link_auth_available_bits(NULL, &bits), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_link_auth_available_bits((qkd_link *)psk, &bits), QKD_ERR_WRONG_HANDLE);

    CHECK_RC(qkd_simulate(1 << 16, 0.02, QKD_ERROR_MODEL_IID, &seed, &a, &b, NULL), QKD_OK);
    CHECK_RC(qkd_session_alice_new(la, "c-1", a, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_session_alice_new(la, NULL, a, &s), QKD_ERR_NULL_ARGUMENT);
    CHECK(strcmp(detail(), "argument `block_id` is NULL") == 0);
    CHECK_RC(qkd_session_bob_new((qkd_link *)a, "c-1", b, &s), QKD_ERR_WRONG_HANDLE);
    CHECK(strstr(detail(), "not a qkd_link: it is qkd_block") != NULL);
    CHECK_RC(qkd_session_bob_new(lb, "c-1", (qkd_block *)la, &s), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_session_bob_new(lb, "", b, &s), QKD_ERR_INVALID_ARGUMENT);
    CHECK(s == NULL);
    CHECK_RC(qkd_session_alice_new(la, "c-1", a, &alice), QKD_OK);
    CHECK_RC(qkd_session_bob_new(lb, "c-1", b, &bob), QKD_OK);

    /* Running: no outcome yet, a NULL buffer from Bob (he waits for the hello). */
    CHECK_RC(qkd_session_is_finished(alice, &done), QKD_OK);
    CHECK(!done);
    CHECK_RC(qkd_session_outcome(alice, &r, &key), QKD_ERR_IN_PROGRESS);
    CHECK(strstr(detail(), "has not ended yet") != NULL && key == NULL);
    CHECK_RC(qkd_session_poll_transmit(bob, &buf), QKD_OK);
    CHECK(buf == NULL);
    CHECK_RC(qkd_session_poll_transmit(bob, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_session_poll_transmit((qkd_session *)la, &buf), QKD_ERR_WRONG_HANDLE);
    CHECK_RC(qkd_session_handle(NULL, garbage, 4), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_session_is_finished(bob, NULL), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_session_outcome(bob, NULL, &key), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_buffer_data(NULL, NULL, &len), QKD_ERR_NULL_ARGUMENT);
    CHECK_RC(qkd_session_message_block_id(NULL, 0, id, sizeof id, &len), QKD_ERR_MALFORMED_MESSAGE);

    /* The hello names its block. */
    CHECK_RC(qkd_session_poll_transmit(alice, &buf), QKD_OK);
    CHECK(buf != NULL);
    {
        const uint8_t *data = NULL;
        CHECK_RC(qkd_buffer_data(buf, &data, &len), QKD_OK);
        size_t hello_len = len;
        CHECK_RC(qkd_session_message_block_id(data, hello_len, id, sizeof id, &len), QKD_OK);
        CHECK(strcmp(id, "c-1") == 0 && len == 3);
        CHECK_RC(qkd_session_handle(bob, data, hello_len), QKD_OK);
        qkd_buffer_free(buf);
    }
    /* The rest of the block, then the outcomes. */
    CHECK(drive_pair(alice, bob) == 0);
    CHECK_RC(qkd_session_is_finished(bob, &done), QKD_OK);
    CHECK(done);
    CHECK_RC(qkd_session_outcome(bob, &r, &key), QKD_OK);
    CHECK(r.outcome == QKD_OUTCOME_KEY && r.auth_bits == 384 && r.final_bits > 0 && key != NULL);
    qkd_block_free(key);
    key = NULL;
    CHECK_RC(qkd_session_outcome(bob, &r, &key), QKD_ERR_KEY_UNAVAILABLE);
    CHECK_RC(qkd_session_outcome(alice, &r, &key), QKD_OK);
    qkd_block_free(key);
    key = NULL;
    /* An ended session refuses everything, garbage included. */
    fill_garbage(garbage, sizeof garbage);
    CHECK_RC(qkd_session_handle(alice, garbage, sizeof garbage), QKD_ERR_UNEXPECTED_MESSAGE);
    qkd_session_free(alice);
    qkd_session_free(bob);

    /* Garbage ends a fresh session, with an abort queued for the peer. */
    CHECK_RC(qkd_session_bob_new(lb, "c-2", b, &bob), QKD_OK);
    for (int i = 0; i < 20; i++) {
        fill_garbage(garbage, sizeof garbage);
        qkd_result rc = qkd_session_handle(bob, garbage, sizeof garbage);
        CHECK(rc == (i == 0 ? QKD_ERR_MALFORMED_MESSAGE : QKD_ERR_UNEXPECTED_MESSAGE));
    }
    CHECK_RC(qkd_session_outcome(bob, &r, &key), QKD_ERR_MALFORMED_MESSAGE);
    CHECK(strstr(detail(), "malformed message") != NULL && key == NULL);
    CHECK_RC(qkd_session_poll_transmit(bob, &buf), QKD_OK);
    CHECK(buf != NULL); /* the abort */
    qkd_buffer_free(buf);
    qkd_session_free(bob);

    /* Blocks on four threads at once over the same two links. */
    {
        pthread_t threads[4];
        struct session_job jobs[4];
        for (int i = 0; i < 4; i++) {
            jobs[i] = (struct session_job){.alice_link = la, .bob_link = lb, .seed = 100 + (uint64_t)i};
            snprintf(jobs[i].id, sizeof jobs[i].id, "t-%d", i);
            CHECK(pthread_create(&threads[i], NULL, session_worker, &jobs[i]) == 0);
        }
        for (int i = 0; i < 4; i++) {
            CHECK(pthread_join(threads[i], NULL) == 0);
            CHECK(jobs[i].ok);
        }
    }
    /* 5 blocks' pads (256 bits each) and the hash key (128) are spent on both sides. */
    CHECK_RC(qkd_link_auth_available_bits(la, &bits), QKD_OK);
    CHECK(bits == 8 * sizeof psk - 5 * 256 - 128);
    CHECK_RC(qkd_link_auth_available_bits(lb, &bits), QKD_OK);
    CHECK(bits == 8 * sizeof psk - 5 * 256 - 128);

    qkd_link_free(la);
    qkd_link_free(lb);
    qkd_block_free(a);
    qkd_block_free(b);
}

int main(void) {
    test_version_and_messages();
    test_null_arguments();
    test_invalid_values();
    test_short_buffers();
    test_wrong_handles();
    test_garbage_messages();
    test_protocol_order();
    test_corrupted_in_transit();
    test_end_to_end();
    test_pipeline();
    test_store();
    test_sessions();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
