/* libqkd example: Alice's and Bob's sessions of several blocks at once over one link, the
 * messages carried by two in-memory queues (a stand-in for the connection between two KMEs).
 *
 * Each side creates its qkd_link once (the same settings and pre-shared authentication secret
 * on both sides). Alice starts a qkd_session per block; Bob starts his when the first message
 * of a block arrives, routing every message by the block ID it names. The driver only moves
 * bytes: qkd_session_poll_transmit -> queue -> qkd_session_handle. When both sides have ended,
 * qkd_session_outcome gives each side's report and final key. A last block has one bit of one
 * message flipped in transit: both sides end without key.
 *
 * Both raw halves come from one simulation here (standing in for the quantum channel); the
 * example compares the final keys in memory (test only: never print or send key bytes).
 *
 * Build: gcc -std=c11 -Wall -Wextra session.c $(pkg-config --cflags --libs qkd)
 * Usage: session [BITS [QBER [BLOCKS]]]   (default 262144 bits at QBER 0.03, 3 blocks) */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qkd.h"

#define MAX_BLOCKS 16

/* The detail of this thread's last failed call. */
static const char *detail(void) {
    static char d[512];
    size_t n = 0;
    if (qkd_last_error_message(d, sizeof d, &n) != QKD_OK) d[0] = 0;
    return d;
}

static void print_error(const char *what, qkd_result rc) {
    fprintf(stderr, "%s: %s (%s)\n", what, qkd_result_message(rc), detail());
}

#define TRY(call)                                 \
    do {                                          \
        qkd_result rc_ = (call);                  \
        if (rc_ != QKD_OK) {                      \
            print_error(#call, rc_);              \
            goto out;                             \
        }                                         \
    } while (0)

/* ---- a FIFO of messages (the "wire" one way) ---- */

typedef struct msg {
    struct msg *next;
    size_t len;
    uint8_t bytes[];
} msg;

typedef struct {
    msg *head, *tail;
} queue;

static int push(queue *q, const uint8_t *bytes, size_t len) {
    msg *m = malloc(sizeof *m + len);
    if (m == NULL) return -1;
    m->next = NULL;
    m->len = len;
    memcpy(m->bytes, bytes, len);
    if (q->tail) q->tail->next = m;
    else q->head = m;
    q->tail = m;
    return 0;
}

static msg *pop(queue *q) {
    msg *m = q->head;
    if (m) {
        q->head = m->next;
        if (q->head == NULL) q->tail = NULL;
    }
    return m;
}

static void clear(queue *q) {
    msg *m;
    while ((m = pop(q)) != NULL) free(m);
}

/* ---- one side's blocks ---- */

typedef struct {
    char id[QKD_BLOCK_ID_MAX_BYTES + 1];
    qkd_block *raw;          /* this side's raw half (Bob: until his session starts) */
    qkd_session *session;    /* NULL until started */
} block_slot;

static block_slot *find(block_slot *slots, int n, const char *id) {
    for (int i = 0; i < n; i++)
        if (strcmp(slots[i].id, id) == 0) return &slots[i];
    return NULL;
}

/* Sends everything `s` has queued (also after it finished: Bob's last tag, an abort). With
 * flip_at >= 0 the flip_at-th message this call counts through *sent gets one bit flipped. */
static int flush(qkd_session *s, queue *wire, long flip_at, long *sent) {
    for (;;) {
        qkd_buffer *buf = NULL;
        const uint8_t *data = NULL;
        size_t len = 0;
        qkd_result rc = qkd_session_poll_transmit(s, &buf);
        if (rc != QKD_OK) return print_error("qkd_session_poll_transmit", rc), -1;
        if (buf == NULL) return 0; /* nothing queued */
        rc = qkd_buffer_data(buf, &data, &len);
        if (rc != QKD_OK) {
            qkd_buffer_free(buf);
            return print_error("qkd_buffer_data", rc), -1;
        }
        int pushed = push(wire, data, len);
        qkd_buffer_free(buf);
        if (pushed) return -1;
        if (flip_at >= 0 && (*sent)++ == flip_at) wire->tail->bytes[len / 2] ^= 0x10;
    }
}

/* Delivers every message on `wire` to the session of its block on the receiving side; Bob
 * (`start_bob`) starts a session when a block's first message arrives. */
static int deliver(queue *wire, block_slot *slots, int n, const qkd_link *bob_link,
                   int *moved) {
    msg *m;
    while ((m = pop(wire)) != NULL) {
        char id[QKD_BLOCK_ID_MAX_BYTES + 1];
        size_t id_len = 0;
        *moved = 1;
        qkd_result rc = qkd_session_message_block_id(m->bytes, m->len, id, sizeof id, &id_len);
        block_slot *slot = rc == QKD_OK ? find(slots, n, id) : NULL;
        if (slot == NULL) { /* not a session message, or an unknown block: dropped */
            fprintf(stderr, "dropped a message (%s)\n", rc == QKD_OK ? id : "undecodable");
            free(m);
            continue;
        }
        if (slot->session == NULL && bob_link != NULL) {
            rc = qkd_session_bob_new(bob_link, slot->id, slot->raw, &slot->session);
            qkd_block_free(slot->raw); /* the session holds its own copy */
            slot->raw = NULL;
            if (rc != QKD_OK) {
                print_error("qkd_session_bob_new", rc);
                free(m);
                return -1;
            }
        }
        if (slot->session != NULL) {
            /* An error ends that session (its outcome says why) and queues an abort for the
             * peer; the other blocks go on. */
            rc = qkd_session_handle(slot->session, m->bytes, m->len);
            if (rc != QKD_OK && rc != QKD_ERR_UNEXPECTED_MESSAGE)
                printf("  %s: %s ended: %s (%s)\n", bob_link ? "bob  " : "alice", slot->id,
                       qkd_result_message(rc), detail());
        }
        free(m);
    }
    return 0;
}

/* Runs the blocks in alice[] / bob[] to their end. Returns 0, or -1 on a driver failure. */
static int run(block_slot *alice, block_slot *bob, int n, const qkd_link *bob_link,
               long flip_at) {
    queue to_bob = {0}, to_alice = {0};
    long sent = 0;
    int status = -1, moved = 1;
    while (moved) {
        moved = 0;
        for (int i = 0; i < n; i++)
            if (alice[i].session && flush(alice[i].session, &to_bob, flip_at, &sent)) goto out;
        if (deliver(&to_bob, bob, n, bob_link, &moved)) goto out;
        for (int i = 0; i < n; i++)
            if (bob[i].session && flush(bob[i].session, &to_alice, -1, &sent)) goto out;
        if (deliver(&to_alice, alice, n, NULL, &moved)) goto out;
    }
    status = 0;
out:
    clear(&to_bob);
    clear(&to_alice);
    return status;
}

/* Takes both outcomes of block i; 1 when both sides hold the same key, 0 when neither holds
 * one, -1 otherwise (or on a failure). */
static int settle(block_slot *a, block_slot *b) {
    qkd_block_report ra, rb;
    qkd_block *ka = NULL, *kb = NULL;
    bool done_a = false, done_b = false;
    size_t diff = 1;
    int result = -1;
    if (a->session == NULL || b->session == NULL ||
        qkd_session_is_finished(a->session, &done_a) != QKD_OK ||
        qkd_session_is_finished(b->session, &done_b) != QKD_OK || !done_a || !done_b) {
        fprintf(stderr, "block %s did not end on both sides\n", a->id);
        return -1;
    }
    qkd_result rc_a = qkd_session_outcome(a->session, &ra, &ka);
    if (rc_a != QKD_OK) printf("  alice: %s: no key (%s)\n", a->id, qkd_result_message(rc_a));
    qkd_result rc_b = qkd_session_outcome(b->session, &rb, &kb);
    if (rc_b != QKD_OK) printf("  bob  : %s: no key (%s)\n", b->id, qkd_result_message(rc_b));
    if (ka == NULL && kb == NULL) {
        if (rc_a == QKD_OK) printf("  %s: %s\n", a->id, ra.outcome_reason);
        result = 0;
    } else if (ka != NULL && kb != NULL && rc_a == QKD_OK && rc_b == QKD_OK &&
               qkd_block_hamming_distance(ka, kb, &diff) == QKD_OK && diff == 0) {
        printf("%-8s %7.4f %9llu %9llu %6.3f %6u %8u %6llu\n", a->id, ra.qber,
               (unsigned long long)ra.reconciled_bits, (unsigned long long)ra.final_bits,
               ra.efficiency, ra.round_trips, ra.messages, (unsigned long long)ra.auth_bits);
        result = 1;
    } else {
        fprintf(stderr, "block %s: the two sides disagree\n", a->id);
    }
    qkd_block_free(ka);
    qkd_block_free(kb);
    return result;
}

int main(int argc, char **argv) {
    size_t bits = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 262144;
    double qber = argc > 2 ? strtod(argv[2], NULL) : 0.03;
    int blocks = argc > 3 ? atoi(argv[3]) : 3;
    int status = 1, keys = 0, total = 0;
    qkd_link *alice_link = NULL, *bob_link = NULL;
    block_slot alice[MAX_BLOCKS + 1], bob[MAX_BLOCKS + 1];
    uint8_t *psk = NULL;
    size_t psk_len;
    uint64_t left_a = 0, left_b = 0;
    qkd_pipeline_config cfg;
    memset(alice, 0, sizeof alice);
    memset(bob, 0, sizeof bob);
    if (blocks < 1 || blocks > MAX_BLOCKS) blocks = 3;
    total = blocks + 1; /* the last one is tampered with */

    /* The pre-shared secret: 48 bytes per block covers its two pads and a new hash key. */
    psk_len = (size_t)(total * 48 + QKD_SEED_LEN - 1) / QKD_SEED_LEN * QKD_SEED_LEN;
    psk = malloc(psk_len);
    if (psk == NULL) goto out;
    for (size_t i = 0; i < psk_len; i += QKD_SEED_LEN) TRY(qkd_random_seed(psk + i));

    /* Both sides: the same settings and the same secret. */
    TRY(qkd_pipeline_config_default(&cfg));
    cfg.sample_bits = bits / 16;
    cfg.frame_bits = 1 << 14;
    TRY(qkd_link_new(&cfg, psk, psk_len, &alice_link));
    TRY(qkd_link_new(&cfg, psk, psk_len, &bob_link));
    memset(psk, 0, psk_len); /* key material: wipe the copy */

    for (int i = 0; i < total; i++) {
        uint64_t seed = 1000 + (uint64_t)i;
        snprintf(alice[i].id, sizeof alice[i].id, "%s-%d", i < blocks ? "blk" : "tamper", i);
        memcpy(bob[i].id, alice[i].id, sizeof bob[i].id);
        TRY(qkd_simulate(bits, qber, QKD_ERROR_MODEL_IID, &seed, &alice[i].raw, &bob[i].raw,
                         NULL));
    }

    /* Alice starts every block at once; Bob's sessions start as their hellos arrive. */
    for (int i = 0; i < total; i++) {
        TRY(qkd_session_alice_new(alice_link, alice[i].id, alice[i].raw, &alice[i].session));
        qkd_block_free(alice[i].raw);
        alice[i].raw = NULL;
    }
    printf("%d blocks of %zu bits at QBER %.3f, all in flight\n", blocks, bits, qber);
    printf("%-8s %7s %9s %9s %6s %6s %8s %6s\n", "block", "qber", "reconc", "final", "f",
           "trips", "messages", "auth");
    if (run(alice, bob, blocks, bob_link, -1)) goto out;
    for (int i = 0; i < blocks; i++) {
        int r = settle(&alice[i], &bob[i]);
        if (r < 0) goto out;
        keys += r;
    }

    /* The last block with its third message to Bob altered in transit. */
    printf("%s: one bit of Alice's third message flipped in transit\n", alice[blocks].id);
    if (run(&alice[blocks], &bob[blocks], 1, bob_link, 2)) goto out;
    if (settle(&alice[blocks], &bob[blocks]) != 0) {
        fprintf(stderr, "the tampered block left a key\n");
        goto out;
    }

    TRY(qkd_link_auth_available_bits(alice_link, &left_a));
    TRY(qkd_link_auth_available_bits(bob_link, &left_b));
    printf("%d of %d blocks gave identical keys; authentication pool left: Alice %llu bits, "
           "Bob %llu bits\n",
           keys, blocks, (unsigned long long)left_a, (unsigned long long)left_b);
    status = keys == blocks ? 0 : 1;

out:
    for (int i = 0; i < total; i++) {
        qkd_session_free(alice[i].session);
        qkd_session_free(bob[i].session);
        qkd_block_free(alice[i].raw);
        qkd_block_free(bob[i].raw);
    }
    qkd_link_free(alice_link);
    qkd_link_free(bob_link);
    free(psk);
    return status;
}
