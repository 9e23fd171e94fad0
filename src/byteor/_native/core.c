/*
 * byteor._native: the C core (shared-memory sequenced ring, wait strategies, builtin kernels).
 *
 * One C11 extension. Every cross-process word is a C11 atomic with an explicit memory order: the
 * writer of a slot publishes it with a store-release of a cursor, the reader load-acquires that
 * cursor before touching the slot. Each hot cursor sits alone on its own 64-byte cache line. Every
 * wait and every native loop runs with the GIL released.
 *
 * ============================================================================
 * Ring file layout (layout version 2, little-endian, all offsets in bytes)
 * ============================================================================
 *
 *   header (one block, offsets from 0)
 *     0    u8[8]  magic "BYTEORRG" (written last at create: a half-made file never attaches)
 *     8    u32    layout version (2; version 1 had no claim records and its scratch slots at 1920)
 *     12   u32    data offset (= header bytes: where slot 0 starts; a multiple of 64)
 *     16   u64    capacity (slots, a power of two >= 2)
 *     24   u32    slot_bytes (payload bytes per slot)
 *     28   u32    slot stride (slot header + slot_bytes rounded up to 8)
 *     32   u32    n_consumers (1..8)
 *     36   u32    flags (bit 0: multi-producer)
 *     40   u32[8] dependency mask per consumer (bit d set: consumer i waits for consumer d)
 *     72   u8[32] spec hash (raw SHA-256)
 *     104  u64    creation time, unix ns
 *     112  u64    file bytes (data offset + capacity * stride)
 *     120  u32    max participants (16)          124 u32 creator pid
 *     128  line   stop word (u32 stop, u32 reserved, u64 slots dropped by hole repair)  [64 bytes]
 *     192  16 x 32 participants: u32 state (0 free, 1 running, 2 exited), u32 role, u32 pid,
 *                  u32 flags (bit 0: a restart of this role repairs its claims), u64 heartbeat
 *                  CLOCK_MONOTONIC ns, u64 registered unix ns
 *     704  pad to 768
 *     768  line   producer claim cursor:    i64 seq, u32 sleepers flag   [64 bytes]
 *     832  line   producer published cursor: i64 seq, u32 sleepers flag  [64 bytes]
 *     896  8 x line  gating sequence per consumer: i64 seq, u32 sleepers flag  [8 x 64 bytes]
 *     1408 8 x line  redo record per consumer: i64 marker seq, i64 done seq, u32 length  [8 x 64]
 *     1920 16 x line claim record per participant: u64 process start time (clock ticks since boot,
 *                  field 22 of /proc/<pid>/stat: a reused pid has another), i64 lo, i64 hi (the
 *                  sequences the participant claims or claimed last; -1 -1 none)  [16 x 64]
 *     2944 n_consumers x round64(slot_bytes) scratch slots (one per consumer)
 *     data offset = 2944 + n_consumers * round64(slot_bytes)
 *   slots (capacity of them, `stride` bytes each, slot i at data offset + i * stride)
 *     +0   u32    length of the message, or DROPPED_LENGTH (0xFFFFFFFF) for a dropped message
 *     +4   u32    slot flags (reserved, 0)
 *     +8   i64    multi-producer rings only: the sequence last fully written into this slot
 *     +8 or +16   payload, slot_bytes, padded to 8
 *
 * Sequences are signed 64-bit and start at -1 ("nothing yet"); slot index = seq & (capacity - 1).
 * The producer may write seq only when seq - capacity <= min(gating of every consumer).
 * Consumer c may read seq only when seq <= published and seq <= gating[d] for every d in deps[c].
 *
 * Crash-atomic in-place modification (redo record of consumer c):
 *   compute the new bytes into c's scratch slot; store length; store-release marker = seq;
 *   copy scratch -> slot; store-release done = seq. Gating is released per batch (>= done).
 *   On restart, recover(c): if marker > max(gating, done) the copy may be partial: redo it (the
 *   scratch holds the final bytes, so redoing is idempotent); then gating = max(gating, done).
 *   A crash before the marker store leaves the slot untouched and the message is recomputed.
 *
 * Holes of multi-producer rings (a producer that dies between its claim and its publish):
 *   a producer stores its claim record [lo, hi] before the CAS on the claim cursor that takes those
 *   sequences, and leaves it until they are published (it clears it before it waits for room). A
 *   repairer looks at the first unpublished sequence s <= claim: if no live participant's record
 *   covers s, whoever claimed s is gone (or closed its Ring without committing), so s is marked
 *   DROPPED_LENGTH, published and counted. A participant is live when its pid exists, is not a
 *   zombie and has the start time recorded at registration. Consumers repair when the published
 *   cursor has not moved for REPAIR_AFTER_NS while claims are outstanding (and at once when the
 *   stop word is set); Ring.repair() does it on demand. A LaneGraph role flags its entries
 *   PART_FLAG_SUCCESSOR: others leave its claims alone, and its restart repairs them, keeping the
 *   slots its batch record will publish (a plain repairer could drop a slot the restart then
 *   counts as published).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "native.h" /* the module-init hooks of journal.c and dataguard.c (their own translation units) */

#define BYTEOR_NATIVE_ABI 1

/* ============================================================================
 * Layout constants
 * ============================================================================ */

#define RING_MAGIC "BYTEORRG"
#define RING_LAYOUT_VERSION 2u
#define CACHE_LINE 64
#define MAX_CONSUMERS 8
#define MAX_PARTICIPANTS 16
#define FLAG_MULTI_PRODUCER 1u
#define DROPPED_LENGTH 0xFFFFFFFFu

#define OFF_STOP 128
#define OFF_PARTICIPANTS 192
#define OFF_CLAIM 768
#define OFF_PUBLISHED 832
#define OFF_GATING 896
#define OFF_REDO 1408
#define OFF_CLAIMRECS 1920
#define OFF_SCRATCH 2944

#define WAIT_SPIN 0
#define WAIT_YIELD 1
#define WAIT_BACKOFF 2
#define WAIT_BLOCK 3

#define OP_IDENTITY 0
#define OP_ADD_U8 1

#define PART_FREE 0u
#define PART_RUNNING 1u
#define PART_EXITED 2u
#define PART_CLAIMING 3u /* being taken by register_participant */
#define PART_FLAG_SUCCESSOR 1u
#define ROLE_PRODUCER 1u /* the role a multi-producer claim registers with (runtime/_stage_main.py) */

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t data_offset;
    uint64_t capacity;
    uint32_t slot_bytes;
    uint32_t stride;
    uint32_t n_consumers;
    uint32_t flags;
    uint32_t deps[MAX_CONSUMERS];
    uint8_t spec_hash[32];
    uint64_t created_ns;
    uint64_t file_bytes;
    uint32_t max_participants;
    uint32_t creator_pid;
} ring_header_t;

typedef struct {
    _Atomic uint32_t stop;
    uint32_t reserved;
    _Atomic uint64_t repaired; /* slots a hole repair marked dropped */
    char pad[CACHE_LINE - 16];
} stop_line_t;

typedef struct {
    _Atomic uint32_t state;
    _Atomic uint32_t role;
    _Atomic uint32_t pid;
    _Atomic uint32_t flags;
    _Atomic int64_t heartbeat_ns;
    _Atomic int64_t registered_ns;
} participant_t;

typedef struct {
    _Atomic uint64_t start_ticks;
    _Atomic int64_t lo;
    _Atomic int64_t hi;
    char pad[CACHE_LINE - 24];
} claimrec_t;

typedef struct {
    _Atomic int64_t seq; /* futex waits on the low 32 bits (little-endian: the first word) */
    _Atomic uint32_t waiters; /* 1: a waiter may be asleep on this cell (set by it, cleared by the waker) */
    char pad[CACHE_LINE - 12];
} seq_line_t;

typedef struct {
    _Atomic int64_t marker;
    _Atomic int64_t done;
    _Atomic uint32_t length;
    char pad[CACHE_LINE - 20];
} redo_line_t;

_Static_assert(sizeof(ring_header_t) == 128, "header block is 128 bytes");
_Static_assert(sizeof(stop_line_t) == CACHE_LINE, "stop line");
_Static_assert(sizeof(participant_t) == 32, "participant entry");
_Static_assert(sizeof(seq_line_t) == CACHE_LINE, "seq line");
_Static_assert(sizeof(redo_line_t) == CACHE_LINE, "redo line");
_Static_assert(OFF_PARTICIPANTS + MAX_PARTICIPANTS * 32 <= OFF_CLAIM, "participants fit");
_Static_assert(OFF_GATING + MAX_CONSUMERS * CACHE_LINE == OFF_REDO, "gating lines");
_Static_assert(sizeof(claimrec_t) == CACHE_LINE, "claim record");
_Static_assert(OFF_REDO + MAX_CONSUMERS * CACHE_LINE == OFF_CLAIMRECS, "redo lines");
_Static_assert(OFF_CLAIMRECS + MAX_PARTICIPANTS * CACHE_LINE == OFF_SCRATCH, "claim records");

static inline uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

static inline uint32_t slot_header_bytes(uint32_t flags) {
    return (flags & FLAG_MULTI_PRODUCER) ? 16u : 8u;
}

static inline uint64_t layout_data_offset(uint32_t slot_bytes, uint32_t n_consumers) {
    return OFF_SCRATCH + (uint64_t)n_consumers * round_up(slot_bytes, CACHE_LINE);
}

static inline uint64_t layout_stride(uint32_t slot_bytes, uint32_t flags) {
    return slot_header_bytes(flags) + round_up(slot_bytes, 8);
}

/* ============================================================================
 * Clocks, futex, signals
 * ============================================================================ */

static inline int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int64_t unix_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Pause between two polls of a shared cell. Every poll pulls the cache line the publisher is
 * writing into the shared state, so the publisher's next store must win it back. The pause count
 * doubles per poll up to a cap: WAIT_SPIN caps it at SPIN_PAUSE_CAP_SPIN (a poll every ~50 ns:
 * latency first); the spin phases of backoff and block cap it at SPIN_PAUSE_CAP (~0.8 us between
 * polls), so a waiter that is about to yield or sleep anyway does not keep stealing the line. */
#define SPIN_PAUSE_CAP 32u
#define SPIN_PAUSE_CAP_SPIN 2u
static inline void spin_pause_to(uint32_t *pauses, uint32_t cap) {
    for (uint32_t i = 0; i < *pauses; i++) cpu_relax();
    if (*pauses < cap) *pauses *= 2;
}

static inline void spin_pause(uint32_t *pauses) { spin_pause_to(pauses, SPIN_PAUSE_CAP); }

/* Shared (not PRIVATE) futex: waiters live in different processes mapping the same file. */
static void futex_wait_u32(void *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
    ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
    syscall(SYS_futex, addr, FUTEX_WAIT, expected, &ts, NULL, 0);
}

static void futex_wake_all(void *addr) { syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0); }

/*
 * Waking sleepers without a full fence on the hot path.
 *
 * A publisher stores a cell, then reads the cell's `waiters` flag and, only when it is set, clears
 * it and calls FUTEX_WAKE (so one sleep costs one wake, not one per publish until the sleeper
 * runs); a waiter sets the flag, re-reads the cell and sleeps only if it is unchanged.
 * That Dekker handshake needs a StoreLoad barrier on both sides. A full fence (an x86 `xchg`) on
 * every publish waits for the cache line to come back from the consumer's core, which costs more
 * than the rest of publish. So the barrier is made asymmetric: every process that loads this module
 * registers with membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED), publishers use a plain
 * store-release + compiler barrier, and a waiter about to sleep calls
 * membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) (~1 us, only on the way to sleep), which runs a full
 * barrier on every CPU currently running a registered process. Where membarrier is unavailable the
 * publisher falls back to a seq_cst store (correct, slower).
 */
static int g_membarrier = 0;

static void membarrier_register(void) {
    long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    g_membarrier = q >= 0 && (q & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
                   syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
}

/* Bumped in a forked child: a Ring object inherited across fork() must not claim through the
 * parent's participant entry (the parent's liveness would then vouch for the child's claims). */
static _Atomic uint64_t g_fork_gen = 0;

static void membarrier_atfork_child(void) {
    atomic_fetch_add_explicit(&g_fork_gen, 1, memory_order_relaxed);
    if (g_membarrier) membarrier_register(); /* registration belongs to the address space */
}

static inline void cell_store_wake(seq_line_t *cell, int64_t v) {
    if (g_membarrier) {
        atomic_store_explicit(&cell->seq, v, memory_order_release);
        atomic_signal_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&cell->waiters, memory_order_relaxed) != 0 &&
            atomic_exchange_explicit(&cell->waiters, 0, memory_order_relaxed) != 0)
            futex_wake_all((void *)&cell->seq);
    } else {
        atomic_store_explicit(&cell->seq, v, memory_order_seq_cst);
        if (atomic_load_explicit(&cell->waiters, memory_order_seq_cst) != 0 &&
            atomic_exchange_explicit(&cell->waiters, 0, memory_order_seq_cst) != 0)
            futex_wake_all((void *)&cell->seq);
    }
}

/* The waiter's half: after announcing itself in `waiters`, make sure every publisher's earlier
 * store is visible (or that the publisher will see the announcement). Returns 0 if that could not
 * be guaranteed (then the caller sleeps in short slices only). */
static inline int waiter_barrier(void) {
    atomic_thread_fence(memory_order_seq_cst);
    if (!g_membarrier) return 1; /* publishers use seq_cst stores */
    return syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0;
}

static inline uint32_t low_word(int64_t v) { return (uint32_t)((uint64_t)v & 0xFFFFFFFFu); }

/* ============================================================================
 * Wait strategies
 * ============================================================================
 *
 * A waiter is stepped by a loop that re-checks its condition between steps:
 *   spin    : poll every ~50 ns (see spin_pause_to); lowest latency, one core at 100%.
 *   yield   : sched_yield(); a core at 100% in the scheduler, but gives the CPU away.
 *   backoff : 32 spin polls (~15 us), sched_yield for 200 us, then nanosleep doubling 1 us ..
 *             256 us (default); an idle waiter costs a few thousand wakeups per second. The yield
 *             phase keeps a stage awake through the short gaps of a busy stream: sleeping there
 *             costs a Python producer a third of its rate.
 *   block   : 32 spin polls, yields for 20 us, then FUTEX_WAIT on the lagging cell's low word
 *             (slices of <= 100 ms);
 *             an idle waiter costs ~10 wakeups per second, a publisher pays one syscall only
 *             when some waiter sleeps.
 * Oversubscription (backoff and block): spinning and yielding only pay while every busy
 * participant has a CPU of its own. When there are more runnable threads than CPUs (a producer and
 * four subscribers on two cores), a spinning or yielding waiter takes CPU time from the thread it
 * is waiting for. A waiter sees this directly: sched_yield() returns at once when nothing else
 * wants this CPU (~1 us) and only after another thread has run when something does. A yield that
 * switched to another thread, while the machine has more runnable threads than CPUs or the ring
 * more participants than CPUs (yield_probe), marks the calling thread "contended" (a thread-local hint,
 * since it is a property of the machine's load, not of one ring): the yield phase ends at once
 * (backoff sleeps, block goes to the futex), and the next waits of that thread skip the spin
 * phase and start with a single yield, which re-probes; a yield that returns at once clears the
 * hint and the full spin and yield phases come back. A contended backoff waiter sleeps at least
 * CONTENDED_SLEEP_NS, then consumes in one large batch what was published meanwhile, so the
 * producer keeps its CPU. Measured with `python -m benchmarks.lanes` (1 producer + 4 subscribers
 * on 2 cores), fanout_4/fanout_1 went from a median of 0.43 to 0.58 with backoff.
 * With the GIL released, every ~50 ms of waiting the loop briefly takes the GIL back to run
 * Python signal handlers (so Ctrl-C works); a handler that raises ends the wait with its error.
 */

#define SIGNAL_CHECK_NS 50000000LL
#define BLOCK_SLICE_NS 100000000LL
#define BLOCK_YIELD_NS 20000LL
#define BACKOFF_YIELD_NS 200000LL
#define CONTENDED_YIELD_NS 20000LL
/* A contended backoff waiter sleeps at least this long: each wakeup costs two context switches and
 * preempts whoever runs on that CPU (often the producer), so it should find a batch worth that
 * (~25 k messages at 250 M msgs/s); measured here with fanout to 4 subscribers on 2 cores, the
 * median fanout_4/fanout_1 was 0.52 when sleeping only the timer-slack minimum (~55 us), ~0.6 with
 * this floor. */
#define CONTENDED_SLEEP_NS 100000LL
#define SPIN_POLLS 32u

/* 1 while this thread's last probing sched_yield() found another thread wanting its CPU. */
static _Thread_local int t_contended = 0;

static inline long thread_nivcsw(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0) return -1;
    return ru.ru_nivcsw;
}

/* Runnable threads on the whole machine right now (the 4th field of /proc/loadavg, "R/T"), or -1.
 * Read with pread on one descriptor per process (procfs regenerates the text at offset 0). */
static _Atomic int g_loadavg_fd = -2;

static long machine_runnable(void) {
    int fd = atomic_load_explicit(&g_loadavg_fd, memory_order_relaxed);
    if (fd == -2) {
        int nfd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        int expected = -2;
        if (!atomic_compare_exchange_strong(&g_loadavg_fd, &expected, nfd)) {
            if (nfd >= 0) close(nfd);
        }
        fd = atomic_load_explicit(&g_loadavg_fd, memory_order_relaxed);
    }
    if (fd < 0) return -1;
    char buf[128];
    ssize_t got = pread(fd, buf, sizeof buf - 1, 0);
    if (got <= 0) return -1;
    buf[got] = 0;
    const char *p = buf;
    for (int field = 0; field < 3 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    if (!p) return -1;
    long v = 0;
    while (*p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
    return *p == '/' ? v : -1;
}

/* Lazily read once, possibly by several waiting threads at the same time: an atomic, so the
 * concurrent first writes (all of the same value) are not a data race. */
static _Atomic long g_online_cpus = 0;

/* Yield once and learn whether the machine is oversubscribed (see "Oversubscription" above). The
 * yield is contended when it switched to another thread (this thread's involuntary context switch
 * count moved: two waiters yielding to each other return fast, yet neither should keep yielding)
 * or took longer than CONTENDED_YIELD_NS, *and* the machine has more runnable threads than CPUs.
 * or the ring has more participants (consumer cells + a producer) than the machine has CPUs.
 * The second test matters: the scheduler sometimes places a waiter on the CPU of the thread it
 * waits for while the other CPU idles; a waiter that then slept would look idle to the load
 * balancer and never be moved (measured: a 1-subscriber fanout stuck at a quarter of its rate),
 * while one that stays runnable gets migrated. Returns 1 when contended. */
static inline int yield_probe(uint32_t participants) {
    long sw0 = thread_nivcsw();
    int64_t t0 = mono_ns();
    sched_yield();
    long sw1 = thread_nivcsw();
    int switched = (sw0 >= 0 && sw1 != sw0) || mono_ns() - t0 > CONTENDED_YIELD_NS;
    if (switched) {
        long cpus = atomic_load_explicit(&g_online_cpus, memory_order_relaxed);
        if (cpus <= 0) {
            cpus = sysconf(_SC_NPROCESSORS_ONLN);
            atomic_store_explicit(&g_online_cpus, cpus, memory_order_relaxed);
        }
        long runnable = machine_runnable();
        switched = runnable < 0 || cpus <= 0 || runnable > cpus || (long)participants > cpus;
    }
    t_contended = switched;
    return t_contended;
}

typedef struct {
    int strategy;
    int64_t deadline;      /* CLOCK_MONOTONIC ns, or -1 for none */
    int64_t next_check;    /* next signal check / clock read */
    uint32_t n;            /* steps so far */
    uint32_t pauses;       /* pauses before the next poll (spin phases) */
    uint32_t spin;         /* spin polls of this wait (0 while the thread is contended) */
    uint32_t participants; /* threads the waited-on ring keeps busy (0: unknown) */
    int64_t sleep_ns;
    int64_t yield_until;   /* block: yield (do not sleep) until this CLOCK_MONOTONIC ns */
    PyThreadState *ts;     /* saved thread state while the GIL is released, or NULL */
} waiter_t;

#define STEP_OK 0
#define STEP_TIMEOUT -1
#define STEP_ERROR -3
#define STEP_CLOSED -4 /* close() ran (another thread, a signal handler) while the call waited */

static void waiter_init(waiter_t *w, int strategy, int64_t timeout_ns, PyThreadState *ts) {
    w->strategy = strategy;
    int64_t now = (timeout_ns >= 0 || ts) ? mono_ns() : 0;
    w->deadline = timeout_ns >= 0 ? now + timeout_ns : -1;
    w->next_check = now + SIGNAL_CHECK_NS;
    w->n = 0;
    w->pauses = 1;
    w->spin = SPIN_POLLS;
    w->participants = 0;
    w->sleep_ns = 1000;
    w->yield_until = 0;
    w->ts = ts;
}

/* Time-based housekeeping: deadline and Python signal handlers. */
static int waiter_tick(waiter_t *w, int force) {
    if (!force && w->deadline < 0 && w->ts == NULL) return STEP_OK;
    int64_t now = mono_ns();
    if (w->deadline >= 0 && now >= w->deadline) return STEP_TIMEOUT;
    if (w->ts != NULL && now >= w->next_check) {
        w->next_check = now + SIGNAL_CHECK_NS;
        PyEval_RestoreThread(w->ts);
        int r = PyErr_CheckSignals();
        w->ts = PyEval_SaveThread();
        if (r < 0) return STEP_ERROR;
    }
    return STEP_OK;
}

/* One step of waiting. `cell`/`seen` name the cell that is behind and the value just observed in it
 * (used by the block strategy; NULL when there is no single cell to sleep on). */
static int waiter_step(waiter_t *w, seq_line_t *cell, int64_t seen) {
    uint32_t n = w->n++;
    switch (w->strategy) {
    case WAIT_SPIN:
        spin_pause_to(&w->pauses, SPIN_PAUSE_CAP_SPIN);
        if ((n & 255u) == 255u) return waiter_tick(w, 0);
        return STEP_OK;
    case WAIT_YIELD:
        sched_yield();
        if ((n & 63u) == 63u) return waiter_tick(w, 0);
        return STEP_OK;
    case WAIT_BLOCK:
        if (n == 0) w->spin = t_contended ? 0 : SPIN_POLLS;
        if (n < w->spin) {
            spin_pause(&w->pauses);
            return (n & 15u) == 15u ? waiter_tick(w, 0) : STEP_OK;
        }
        if (n == w->spin) w->yield_until = mono_ns() + BLOCK_YIELD_NS;
        if (cell == NULL || mono_ns() < w->yield_until) {
            /* waking a sleeper costs the publisher a syscall (and, in a VM, an IPI): yield for a
             * moment first, so the brief gaps of a stream do not put the stage to sleep; kept short
             * because block is the strategy that must cost nothing between sparse messages. A
             * contended yield ends this phase: the CPU is wanted by others (oversubscribed). */
            if (yield_probe(w->participants)) w->yield_until = 0;
            return (n & 15u) == 15u ? waiter_tick(w, 0) : STEP_OK;
        } else {
            int64_t slice = BLOCK_SLICE_NS;
            int64_t now = mono_ns();
            if (w->deadline >= 0) {
                if (now >= w->deadline) return STEP_TIMEOUT;
                if (w->deadline - now < slice) slice = w->deadline - now;
            }
            if (w->ts != NULL && w->next_check - now < slice) slice = w->next_check - now;
            if (slice < 1000) slice = 1000;
            atomic_store_explicit(&cell->waiters, 1, memory_order_seq_cst);
            if (!waiter_barrier() && slice > 1000000) slice = 1000000;
            if (atomic_load_explicit(&cell->seq, memory_order_seq_cst) == seen)
                futex_wait_u32((void *)&cell->seq, low_word(seen), slice);
            /* no clear here: the waker cleared it, or another sleeper may still need it */
            return waiter_tick(w, 1);
        }
    case WAIT_BACKOFF:
    default:
        if (n == 0) w->spin = t_contended ? 0 : SPIN_POLLS;
        if (n < w->spin) {
            spin_pause(&w->pauses);
            if ((n & 15u) == 15u) return waiter_tick(w, 0);
            return STEP_OK;
        }
        if (n == w->spin) w->yield_until = mono_ns() + BACKOFF_YIELD_NS;
        if (mono_ns() < w->yield_until) {
            /* a contended yield ends the yield phase: sleep instead of taking CPU time from the
             * producer this waiter is waiting for */
            if (yield_probe(w->participants)) w->yield_until = 0;
            return (n & 15u) == 15u ? waiter_tick(w, 0) : STEP_OK;
        } else {
            /* the floor does not feed the doubling: a waiter that stays idle keeps sleeping
             * CONTENDED_SLEEP_NS until the normal ladder passes it, instead of jumping to 256 us
             * (which left stages of a chain asleep while their input piled up) */
            int64_t d = w->sleep_ns;
            if (t_contended && d < CONTENDED_SLEEP_NS) d = CONTENDED_SLEEP_NS;
            struct timespec ts = {0, (long)d};
            nanosleep(&ts, NULL);
            if (w->sleep_ns < 256000) w->sleep_ns *= 2;
            return waiter_tick(w, 1);
        }
    }
}

/* ============================================================================
 * Ring object
 * ============================================================================ */

typedef struct {
    PyObject_HEAD
    unsigned char *base;      /* the mapping, or NULL when unmapped */
    size_t map_bytes;
    int closed;               /* close() called (the mapping may live on while views exist) */
    Py_ssize_t exports;       /* memoryviews alive over the mapping */
    Py_ssize_t busy;          /* calls running with the GIL released (waits, native loops) */
    /* copies of the immutable header fields */
    int64_t capacity;
    int64_t mask;
    uint32_t slot_bytes;
    uint32_t stride;
    uint32_t slot_hdr;
    uint32_t n_consumers;
    uint32_t flags;
    uint32_t deps[MAX_CONSUMERS];
    uint8_t dep_list[MAX_CONSUMERS][MAX_CONSUMERS];
    uint8_t dep_count[MAX_CONSUMERS];
    unsigned char *slots;
    stop_line_t *stop;
    participant_t *parts;
    seq_line_t *claim;
    seq_line_t *published;
    seq_line_t *gating;
    redo_line_t *redo;
    claimrec_t *recs;
    unsigned char *scratch;
    uint32_t scratch_stride;
    /* multi-producer: this object's participant entry (its claim record), -1 before the first claim;
     * valid only in the process that registered it (prod_gen: g_fork_gen then) */
    int prod_slot;
    uint64_t prod_gen;
    int64_t prod_lo, prod_hi, prod_out; /* its claims not yet published: [lo, hi] holds them all, out counts */
    /* consumers of a multi-producer ring: when the published cursor was last seen to move */
    _Atomic int64_t stuck_pub;
    _Atomic int64_t stuck_since;
    /* producer-local state (single producer) */
    int64_t next_seq;         /* next sequence this producer writes */
    int sp_fast;              /* open single-producer ring: publish() may take the inline fast path */
    PyObject *seq_cache;      /* the int publish() returned last (reused when nobody else holds it) */
    int64_t gating_cache;     /* last observed min gating */
    /* buffer export of a sub-range (set just before PyMemoryView_FromObject) */
    unsigned char *export_ptr;
    Py_ssize_t export_len;
    int export_readonly;
    PyObject *path;
} RingObject;

static PyTypeObject RingType;
static PyObject *AttachError;

static inline unsigned char *slot_at(RingObject *r, int64_t seq) {
    return r->slots + (size_t)(seq & r->mask) * r->stride;
}
static inline _Atomic uint32_t *slot_len(unsigned char *slot) { return (_Atomic uint32_t *)(void *)slot; }
static inline _Atomic int64_t *slot_pubseq(unsigned char *slot) { return (_Atomic int64_t *)(void *)(slot + 8); }
static inline unsigned char *slot_payload(RingObject *r, unsigned char *slot) { return slot + r->slot_hdr; }
static inline unsigned char *scratch_of(RingObject *r, int c) { return r->scratch + (size_t)c * r->scratch_stride; }

static int ring_check(RingObject *r) {
    if (r->closed || r->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "ring is closed");
        return -1;
    }
    return 0;
}

static int check_consumer(RingObject *r, long c) {
    if (c < 0 || (uint32_t)c >= r->n_consumers) {
        PyErr_Format(PyExc_IndexError, "consumer index %ld out of range (ring has %u consumers)", c,
                     r->n_consumers);
        return -1;
    }
    return 0;
}

static int check_wait(int wait) {
    if (wait < WAIT_SPIN || wait > WAIT_BLOCK) {
        PyErr_Format(PyExc_ValueError, "unknown wait strategy %d (WAIT_SPIN..WAIT_BLOCK)", wait);
        return -1;
    }
    return 0;
}

static inline int64_t min_gating(RingObject *r) {
    int64_t m = INT64_MAX;
    for (uint32_t i = 0; i < r->n_consumers; i++) {
        int64_t g = atomic_load_explicit(&r->gating[i].seq, memory_order_acquire);
        if (g < m) m = g;
    }
    return m;
}

static inline int stop_set(RingObject *r) { return atomic_load_explicit(&r->stop->stop, memory_order_acquire) != 0; }

/* Highest sequence consumer c may read; sets lag_cell and lag_seen to a cell that is below `want`. */
static inline int64_t barrier_of(RingObject *r, int c, int64_t want, seq_line_t **lag_cell, int64_t *lag_seen) {
    int64_t avail = atomic_load_explicit(&r->published->seq, memory_order_acquire);
    *lag_cell = NULL;
    if (avail < want) {
        *lag_cell = r->published;
        *lag_seen = avail;
    }
    for (int k = 0; k < r->dep_count[c]; k++) {
        seq_line_t *cell = &r->gating[r->dep_list[c][k]];
        int64_t g = atomic_load_explicit(&cell->seq, memory_order_acquire);
        if (g < avail) avail = g;
        if (g < want && *lag_cell == NULL) {
            *lag_cell = cell;
            *lag_seen = g;
        }
    }
    return avail;
}

#define WAIT_STOPPED -2

static void consumer_repair_tick(RingObject *r, int force);
static inline int repair_step(const waiter_t *w);

/* Wait (GIL released; ts = saved state) until consumer c may read `want`. Returns the barrier (>= want),
 * STEP_TIMEOUT, WAIT_STOPPED (stop set and nothing at `want` is published) or STEP_ERROR. */
static int64_t ring_wait_barrier(RingObject *r, int c, int64_t want, waiter_t *w) {
    w->participants = r->n_consumers + 1;
    for (;;) {
        seq_line_t *cell;
        int64_t seen = 0;
        int64_t avail = barrier_of(r, c, want, &cell, &seen);
        if (avail >= want) return avail;
        int mp_lag = (r->flags & FLAG_MULTI_PRODUCER) && cell == r->published;
        if (stop_set(r) && atomic_load_explicit(&r->published->seq, memory_order_acquire) < want) {
            if (mp_lag && atomic_load_explicit(&r->claim->seq, memory_order_acquire) >= want) {
                consumer_repair_tick(r, 1); /* stopping: a dead producer's hole must not hide what follows it */
                if (barrier_of(r, c, want, &cell, &seen) >= want) continue;
            }
            return WAIT_STOPPED;
        }
        if (mp_lag && repair_step(w)) consumer_repair_tick(r, 0);
        int s = waiter_step(w, cell, seen);
        if (s != STEP_OK) return s;
    }
}

/* Wait until every consumer has released `need` (the producer may then write need + capacity). */
static int ring_wait_room(RingObject *r, int64_t need, waiter_t *w) {
    w->participants = r->n_consumers + 1;
    for (;;) {
        seq_line_t *lag = NULL;
        int64_t seen = 0, m = INT64_MAX;
        for (uint32_t i = 0; i < r->n_consumers; i++) {
            int64_t g = atomic_load_explicit(&r->gating[i].seq, memory_order_acquire);
            if (g < m) m = g;
            if (g < need && lag == NULL) {
                lag = &r->gating[i];
                seen = g;
            }
        }
        if (m >= need) {
            r->gating_cache = m;
            return STEP_OK;
        }
        int s = waiter_step(w, lag, seen);
        if (s != STEP_OK) return s;
    }
}

/* ============================================================================
 * Buffer export (memoryviews of slots keep the mapping alive)
 * ============================================================================ */

static void ring_unmap(RingObject *r) {
    if (r->base != NULL && r->exports == 0 && r->busy == 0) {
        munmap(r->base, r->map_bytes);
        r->base = NULL;
    }
}

static int Ring_getbuffer(RingObject *r, Py_buffer *view, int flags) {
    if (r->export_ptr == NULL) {
        PyErr_SetString(PyExc_BufferError, "a Ring exports slot views only (use read/slot)");
        return -1;
    }
    int rc = PyBuffer_FillInfo(view, (PyObject *)r, r->export_ptr, r->export_len, r->export_readonly, flags);
    if (rc == 0) r->exports++;
    return rc;
}

static void Ring_releasebuffer(RingObject *r, Py_buffer *view) {
    r->exports--;
    if (r->closed) ring_unmap(r);
}

/* Release the GIL for a wait or a native loop; the mapping stays until every such call returns. */
static inline PyThreadState *ring_nogil_begin(RingObject *r) {
    r->busy++;
    return PyEval_SaveThread();
}

static inline void ring_nogil_end(RingObject *r, PyThreadState *ts) {
    PyEval_RestoreThread(ts);
    r->busy--;
    if (r->closed) ring_unmap(r);
}

static PyObject *make_view(RingObject *r, unsigned char *ptr, Py_ssize_t len, int readonly) {
    r->export_ptr = ptr;
    r->export_len = len;
    r->export_readonly = readonly;
    PyObject *mv = PyMemoryView_FromObject((PyObject *)r);
    r->export_ptr = NULL;
    return mv;
}

static PyBufferProcs Ring_as_buffer = {
    (getbufferproc)Ring_getbuffer,
    (releasebufferproc)Ring_releasebuffer,
};

/* ============================================================================
 * Create / attach / close
 * ============================================================================ */

/* Cursors live in a file any process of the owner can write: arithmetic on values read from it
 * saturates instead of overflowing (attach also refuses values outside [-1, CURSOR_LIMIT]). */
#define CURSOR_LIMIT ((int64_t)1 << 62)

static inline int64_t sat_add(int64_t a, int64_t b) {
    int64_t out;
    if (__builtin_add_overflow(a, b, &out)) return b > 0 ? INT64_MAX : INT64_MIN;
    return out;
}

static inline int64_t sat_sub(int64_t a, int64_t b) {
    int64_t out;
    if (__builtin_sub_overflow(a, b, &out)) return b < 0 ? INT64_MAX : INT64_MIN;
    return out;
}

/* 1 when consumer dependency masks admit an order (no cycle): repeatedly peel consumers whose
 * dependencies are all peeled. Shared by create (refuses the deps) and attach (refuses the file). */
static int deps_acyclic(const uint32_t *deps, uint32_t n) {
    uint32_t peeled = 0;
    for (uint32_t round = 0; round < n; round++)
        for (uint32_t i = 0; i < n; i++)
            if (!(peeled & (1u << i)) && (deps[i] & ~peeled) == 0) peeled |= 1u << i;
    return peeled == (1u << n) - 1;
}

static void ring_bind(RingObject *r) {
    ring_header_t *h = (ring_header_t *)(void *)r->base;
    r->capacity = (int64_t)h->capacity;
    r->mask = r->capacity - 1;
    r->slot_bytes = h->slot_bytes;
    r->stride = h->stride;
    r->flags = h->flags;
    r->slot_hdr = slot_header_bytes(h->flags);
    r->n_consumers = h->n_consumers;
    for (uint32_t i = 0; i < MAX_CONSUMERS; i++) {
        r->deps[i] = i < r->n_consumers ? h->deps[i] : 0;
        r->dep_count[i] = 0;
        for (uint32_t d = 0; d < r->n_consumers; d++)
            if (r->deps[i] & (1u << d)) r->dep_list[i][r->dep_count[i]++] = (uint8_t)d;
    }
    r->slots = r->base + h->data_offset;
    r->stop = (stop_line_t *)(void *)(r->base + OFF_STOP);
    r->parts = (participant_t *)(void *)(r->base + OFF_PARTICIPANTS);
    r->claim = (seq_line_t *)(void *)(r->base + OFF_CLAIM);
    r->published = (seq_line_t *)(void *)(r->base + OFF_PUBLISHED);
    r->gating = (seq_line_t *)(void *)(r->base + OFF_GATING);
    r->redo = (redo_line_t *)(void *)(r->base + OFF_REDO);
    r->recs = (claimrec_t *)(void *)(r->base + OFF_CLAIMRECS);
    r->scratch = r->base + OFF_SCRATCH;
    r->scratch_stride = (uint32_t)round_up(r->slot_bytes, CACHE_LINE);
    int64_t claimed = atomic_load_explicit(&r->claim->seq, memory_order_acquire);
    int64_t published = atomic_load_explicit(&r->published->seq, memory_order_acquire);
    r->next_seq = sat_add(claimed > published ? claimed : published, 1);
    r->sp_fast = !(r->flags & FLAG_MULTI_PRODUCER);
    r->gating_cache = -1;
}

static RingObject *ring_alloc(PyObject *path) {
    RingObject *r = PyObject_New(RingObject, &RingType);
    if (r == NULL) return NULL;
    r->base = NULL;
    r->map_bytes = 0;
    r->closed = 0;
    r->exports = 0;
    r->busy = 0;
    r->sp_fast = 0;
    r->seq_cache = NULL;
    r->export_ptr = NULL;
    r->prod_slot = -1;
    r->prod_gen = 0;
    r->prod_lo = r->prod_hi = -1;
    r->prod_out = 0;
    atomic_init(&r->stuck_pub, -2);
    atomic_init(&r->stuck_since, 0);
    Py_INCREF(path);
    r->path = path;
    return r;
}

static PyObject *Ring_create(PyObject *cls, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"path", "capacity", "slot_bytes", "deps", "spec_hash", "multi_producer", NULL};
    PyObject *path_obj, *deps_obj;
    long long capacity, slot_bytes;
    Py_buffer hash;
    int multi = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ULLOy*|$p", kwlist, &path_obj, &capacity, &slot_bytes,
                                     &deps_obj, &hash, &multi))
        return NULL;
    PyObject *result = NULL;
    uint32_t deps[MAX_CONSUMERS] = {0};
    Py_ssize_t n = 0;
    int fd = -1;
    if (hash.len != 32) {
        PyErr_Format(PyExc_ValueError, "spec_hash must be 32 raw bytes, got %zd", hash.len);
        goto done;
    }
    if (capacity < 2 || capacity > (1LL << 30) || (capacity & (capacity - 1)) != 0) {
        PyErr_Format(PyExc_ValueError, "capacity must be a power of two in 2..2**30, got %lld", capacity);
        goto done;
    }
    if (slot_bytes < 1 || slot_bytes > (1LL << 30)) {
        PyErr_Format(PyExc_ValueError, "slot_bytes must be in 1..2**30, got %lld", slot_bytes);
        goto done;
    }
    PyObject *seq = PySequence_Fast(deps_obj, "deps must be a sequence of int bitmasks");
    if (seq == NULL) goto done;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > MAX_CONSUMERS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "deps must name 1..%d consumers, got %zd", MAX_CONSUMERS, n);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            goto done;
        }
        if (v < 0 || v >= (1L << n) || (v & (1L << i))) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError,
                         "deps[%zd]=%ld: a mask may only name other consumers (bits 0..%zd, not its own)", i, v,
                         n - 1);
            goto done;
        }
        deps[i] = (uint32_t)v;
    }
    Py_DECREF(seq);
    if (!deps_acyclic(deps, (uint32_t)n)) {
        PyErr_SetString(PyExc_ValueError, "deps contain a cycle: no consumer order satisfies them");
        goto done;
    }
    uint32_t flags = multi ? FLAG_MULTI_PRODUCER : 0u;
    uint64_t data_offset = layout_data_offset((uint32_t)slot_bytes, (uint32_t)n);
    uint64_t stride = layout_stride((uint32_t)slot_bytes, flags);
    uint64_t total = data_offset + (uint64_t)capacity * stride;
    if (data_offset > UINT32_MAX || stride > UINT32_MAX || total > ((uint64_t)1 << 40)) {
        PyErr_Format(PyExc_ValueError, "ring too large: %llu bytes", (unsigned long long)total);
        goto done;
    }
    const char *path = PyUnicode_AsUTF8(path_obj);
    if (path == NULL) goto done;
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_obj);
        goto done;
    }
    int rc = posix_fallocate(fd, 0, (off_t)total);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_obj);
        unlink(path);
        goto done;
    }
    void *base = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (base == MAP_FAILED) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_obj);
        unlink(path);
        goto done;
    }
    ring_header_t *h = (ring_header_t *)base;
    h->version = RING_LAYOUT_VERSION;
    h->data_offset = (uint32_t)data_offset;
    h->capacity = (uint64_t)capacity;
    h->slot_bytes = (uint32_t)slot_bytes;
    h->stride = (uint32_t)stride;
    h->n_consumers = (uint32_t)n;
    h->flags = flags;
    memcpy(h->deps, deps, sizeof(deps));
    memcpy(h->spec_hash, hash.buf, 32);
    h->created_ns = (uint64_t)unix_ns();
    h->file_bytes = total;
    h->max_participants = MAX_PARTICIPANTS;
    h->creator_pid = (uint32_t)getpid();
    unsigned char *b = (unsigned char *)base;
    atomic_store_explicit(&((seq_line_t *)(void *)(b + OFF_CLAIM))->seq, -1, memory_order_relaxed);
    atomic_store_explicit(&((seq_line_t *)(void *)(b + OFF_PUBLISHED))->seq, -1, memory_order_relaxed);
    for (int i = 0; i < MAX_PARTICIPANTS; i++) {
        claimrec_t *cr = &((claimrec_t *)(void *)(b + OFF_CLAIMRECS))[i];
        atomic_store_explicit(&cr->lo, -1, memory_order_relaxed);
        atomic_store_explicit(&cr->hi, -1, memory_order_relaxed);
    }
    for (int i = 0; i < MAX_CONSUMERS; i++) {
        atomic_store_explicit(&((seq_line_t *)(void *)(b + OFF_GATING))[i].seq, -1, memory_order_relaxed);
        redo_line_t *rd = &((redo_line_t *)(void *)(b + OFF_REDO))[i];
        atomic_store_explicit(&rd->marker, -1, memory_order_relaxed);
        atomic_store_explicit(&rd->done, -1, memory_order_relaxed);
    }
    if (flags & FLAG_MULTI_PRODUCER)
        for (int64_t i = 0; i < capacity; i++)
            atomic_store_explicit((_Atomic int64_t *)(void *)(b + data_offset + (uint64_t)i * stride + 8), -1,
                                  memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memcpy(h->magic, RING_MAGIC, 8);
    RingObject *r = ring_alloc(path_obj);
    if (r == NULL) {
        munmap(base, (size_t)total);
        unlink(path);
        goto done;
    }
    r->base = b;
    r->map_bytes = (size_t)total;
    ring_bind(r);
    result = (PyObject *)r;
done:
    if (fd >= 0) close(fd);
    PyBuffer_Release(&hash);
    return result;
}

static PyObject *attach_fail(PyObject *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    PyObject *why = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (why == NULL) return NULL;
    PyErr_Format(AttachError, "%U: %U", path, why);
    Py_DECREF(why);
    return NULL;
}

static void hex32(const uint8_t *h, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 15];
    }
    out[64] = 0;
}

static PyObject *Ring_attach(PyObject *cls, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"path", "expect_hash", NULL};
    PyObject *path_obj, *expect = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|$O", kwlist, &path_obj, &expect)) return NULL;
    Py_buffer want = {0};
    int has_want = 0;
    if (expect != Py_None) {
        if (PyObject_GetBuffer(expect, &want, PyBUF_SIMPLE) < 0) return NULL;
        has_want = 1;
        if (want.len != 32) {
            PyBuffer_Release(&want);
            PyErr_Format(PyExc_ValueError, "expect_hash must be 32 raw bytes, got %zd", want.len);
            return NULL;
        }
    }
    const char *path = PyUnicode_AsUTF8(path_obj);
    PyObject *result = NULL;
    void *base = MAP_FAILED;
    size_t size = 0;
    if (path == NULL) goto done;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW); /* a ring is never reached through a link */
    if (fd < 0) {
        int e = errno;
        attach_fail(path_obj, "cannot open: %s", e == ELOOP ? "it is a symlink" : strerror(e));
        goto done;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        attach_fail(path_obj, "not a regular file");
        goto done;
    }
    size = (size_t)st.st_size;
    if (size < OFF_SCRATCH) {
        close(fd);
        attach_fail(path_obj, "truncated: %zu bytes, a ring header needs at least %d", size, OFF_SCRATCH);
        goto done;
    }
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
        int e = errno;
        attach_fail(path_obj, "cannot map: %s", strerror(e));
        goto done;
    }
    ring_header_t *h = (ring_header_t *)base;
    if (memcmp(h->magic, RING_MAGIC, 8) != 0) {
        attach_fail(path_obj, "foreign file: magic is not BYTEORRG (not a byteor ring, or not initialised)");
        goto done;
    }
    if (h->version != RING_LAYOUT_VERSION) {
        attach_fail(path_obj, "layout version %u, this build reads version %u", h->version, RING_LAYOUT_VERSION);
        goto done;
    }
    if (h->capacity < 2 || h->capacity > (1ULL << 30) || (h->capacity & (h->capacity - 1)) != 0 ||
        h->slot_bytes < 1 || h->slot_bytes > (1u << 30) || h->n_consumers < 1 ||
        h->n_consumers > MAX_CONSUMERS || (h->flags & ~FLAG_MULTI_PRODUCER) != 0) {
        attach_fail(path_obj, "corrupt header: capacity %llu, slot_bytes %u, consumers %u, flags %u",
                    (unsigned long long)h->capacity, h->slot_bytes, h->n_consumers, h->flags);
        goto done;
    }
    uint64_t data_offset = layout_data_offset(h->slot_bytes, h->n_consumers);
    uint64_t stride = layout_stride(h->slot_bytes, h->flags);
    if (h->data_offset != data_offset || h->stride != stride) {
        attach_fail(path_obj, "header size mismatch: data offset %u / stride %u, expected %llu / %llu",
                    h->data_offset, h->stride, (unsigned long long)data_offset, (unsigned long long)stride);
        goto done;
    }
    uint64_t total = data_offset + h->capacity * stride;
    if (h->file_bytes != total || size < total) {
        attach_fail(path_obj, "truncated: file is %zu bytes, capacity %llu x %llu-byte slots needs %llu", size,
                    (unsigned long long)h->capacity, (unsigned long long)stride, (unsigned long long)total);
        goto done;
    }
    for (uint32_t i = 0; i < h->n_consumers; i++)
        if (h->deps[i] >= (1u << h->n_consumers) || (h->deps[i] & (1u << i))) {
            attach_fail(path_obj, "corrupt header: dependency mask %u of consumer %u", h->deps[i], i);
            goto done;
        }
    if (!deps_acyclic(h->deps, h->n_consumers)) {
        attach_fail(path_obj, "corrupt header: the dependency masks contain a cycle (every consumer in it would "
                    "wait forever)");
        goto done;
    }
    /* Cursors: read consumers' before the producer's (each only grows, and a consumer never passes the
     * published cursor), so a live ring never fails these checks; a crafted one does. */
    {
        unsigned char *b = (unsigned char *)base;
        const char *bad = NULL;
        int relation = 0;
        int64_t value = 0;
        int64_t gmax = -1;
        for (uint32_t i = 0; i < h->n_consumers && !bad; i++) {
            int64_t g = atomic_load_explicit(&((seq_line_t *)(void *)(b + OFF_GATING))[i].seq, memory_order_acquire);
            redo_line_t *rd = &((redo_line_t *)(void *)(b + OFF_REDO))[i];
            int64_t mk = atomic_load_explicit(&rd->marker, memory_order_acquire);
            int64_t dn = atomic_load_explicit(&rd->done, memory_order_acquire);
            if (g < -1 || g > CURSOR_LIMIT) bad = "gating cursor", value = g;
            else if (mk < -1 || mk > CURSOR_LIMIT) bad = "redo marker", value = mk;
            else if (dn < -1 || dn > CURSOR_LIMIT) bad = "redo done cursor", value = dn;
            if (g > gmax) gmax = g;
            if (mk > gmax) gmax = mk;
            if (dn > gmax) gmax = dn;
        }
        int64_t pub = atomic_load_explicit(&((seq_line_t *)(void *)(b + OFF_PUBLISHED))->seq, memory_order_acquire);
        int64_t claim = atomic_load_explicit(&((seq_line_t *)(void *)(b + OFF_CLAIM))->seq, memory_order_acquire);
        if (!bad && (pub < -1 || pub > CURSOR_LIMIT)) bad = "published cursor", value = pub;
        if (!bad && (claim < -1 || claim > CURSOR_LIMIT)) bad = "claim cursor", value = claim;
        if (!bad && gmax > pub) bad = "a consumer cursor is beyond the published cursor", value = gmax, relation = 1;
        if (!bad && (h->flags & FLAG_MULTI_PRODUCER) && claim < pub)
            bad = "the claim cursor is behind the published cursor", value = claim, relation = 1;
        if (bad) {
            if (relation)
                attach_fail(path_obj, "corrupt cursors: %s (%lld vs %lld)", bad, (long long)value, (long long)pub);
            else
                attach_fail(path_obj, "corrupt cursors: %s %lld is outside -1..2**62", bad, (long long)value);
            goto done;
        }
    }
    if (has_want && memcmp(h->spec_hash, want.buf, 32) != 0) {
        char have[65], exp[65];
        hex32(h->spec_hash, have);
        hex32((const uint8_t *)want.buf, exp);
        attach_fail(path_obj, "spec hash mismatch: file has sha256:%s, expected sha256:%s", have, exp);
        goto done;
    }
    RingObject *r = ring_alloc(path_obj);
    if (r == NULL) goto done;
    r->base = (unsigned char *)base;
    r->map_bytes = size;
    base = MAP_FAILED;
    ring_bind(r);
    result = (PyObject *)r;
done:
    if (base != MAP_FAILED) munmap(base, size);
    if (has_want) PyBuffer_Release(&want);
    return result;
}

static void producer_entry_release(RingObject *r);

static PyObject *Ring_close(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    if (!r->closed) producer_entry_release(r);
    r->closed = 1;
    r->sp_fast = 0;
    ring_unmap(r);
    Py_RETURN_NONE;
}

static void Ring_dealloc(RingObject *r) {
    if (!r->closed) producer_entry_release(r);
    Py_CLEAR(r->seq_cache);
    r->exports = 0;
    r->busy = 0;
    ring_unmap(r);
    Py_XDECREF(r->path);
    PyObject_Free(r);
}

static PyObject *Ring_enter(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    Py_INCREF(r);
    return (PyObject *)r;
}

static PyObject *Ring_exit(RingObject *r, PyObject *args) { return Ring_close(r, NULL); }

/* ============================================================================
 * Argument helpers (vectorcall: no tuple/dict allocated per call)
 * ============================================================================ */

/* Parse optional (wait, timeout_ns) given positionally after `npos` leading args, or by keyword;
 * with `release` non-NULL, also the keyword-only flag release=. */
static int parse_wait_timeout(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t npos,
                              int *wait, int64_t *timeout, int *release) {
    PyObject *w = nargs > npos ? args[npos] : NULL;
    PyObject *t = nargs > npos + 1 ? args[npos + 1] : NULL;
    if (nargs > npos + 2) {
        PyErr_SetString(PyExc_TypeError, "too many positional arguments");
        return -1;
    }
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            if (PyUnicode_CompareWithASCIIString(k, "wait") == 0) w = args[nargs + i];
            else if (PyUnicode_CompareWithASCIIString(k, "timeout_ns") == 0) t = args[nargs + i];
            else if (release != NULL && PyUnicode_CompareWithASCIIString(k, "release") == 0) {
                int v = PyObject_IsTrue(args[nargs + i]);
                if (v < 0) return -1;
                *release = v;
            } else {
                PyErr_Format(PyExc_TypeError, "unexpected keyword argument '%U'", k);
                return -1;
            }
        }
    }
    if (w != NULL) {
        long v = PyLong_AsLong(w);
        if (v == -1 && PyErr_Occurred()) return -1;
        *wait = (int)v;
        if (check_wait(*wait) < 0) return -1;
    }
    if (t != NULL) {
        long long v = PyLong_AsLongLong(t);
        if (v == -1 && PyErr_Occurred()) return -1;
        *timeout = v < 0 ? -1 : (int64_t)v;
    }
    return 0;
}

static inline int64_t arg_i64(PyObject *o) { return (int64_t)PyLong_AsLongLong(o); }

/* Borrow the bytes of a buffer-like object; bytes objects take a fast path without the buffer API. */
typedef struct {
    const char *ptr;
    Py_ssize_t len;
    Py_buffer view;
    int has_view;
} borrowed_t;

static inline int borrow(PyObject *o, borrowed_t *b) {
    if (PyBytes_CheckExact(o)) {
        b->ptr = PyBytes_AS_STRING(o);
        b->len = PyBytes_GET_SIZE(o);
        b->has_view = 0;
        return 0;
    }
    if (PyObject_GetBuffer(o, &b->view, PyBUF_SIMPLE) < 0) return -1;
    b->ptr = (const char *)b->view.buf;
    b->len = b->view.len;
    b->has_view = 1;
    return 0;
}

static inline void unborrow(borrowed_t *b) {
    if (b->has_view) PyBuffer_Release(&b->view);
}

/* ============================================================================
 * Participants: process identity, claim records, hole repair
 * ============================================================================ */

/* 1 when process `pid` exists and is not a zombie, with its start time in *ticks (clock ticks since
 * boot, field 22 of /proc/<pid>/stat; 0 when /proc does not say); 0 when it is gone. The pid comes
 * from a shared file: 0, or one that is not a positive pid_t, is gone (never kill(-1, 0)). */
static int proc_identity(uint32_t pid, uint64_t *ticks) {
    *ticks = 0;
    if (pid == 0 || pid > (uint32_t)INT32_MAX) return 0;
    char path[40];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        return kill((pid_t)pid, 0) == 0 || errno == EPERM; /* no /proc: existence is all there is */
    }
    char buf[1024];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0; /* exited between open and read */
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (p == NULL || p[1] != ' ') return 1;
    p += 2;
    if (*p == 'Z' || *p == 'X') return 0;
    for (int field = 3; field < 22 && p != NULL; field++) {
        p = strchr(p, ' ');
        if (p != NULL) p++;
    }
    if (p != NULL) {
        uint64_t v = 0;
        while (*p >= '0' && *p <= '9' && v < UINT64_MAX / 10) v = v * 10 + (uint64_t)(*p++ - '0');
        *ticks = v;
    }
    return 1;
}

/* Whether participant entry i belongs to a running process: its pid lives and, when both are known,
 * started at the time recorded at registration (a pid the kernel handed to a new process does not). */
static int participant_live(RingObject *r, int i) {
    uint64_t ticks;
    if (!proc_identity(atomic_load_explicit(&r->parts[i].pid, memory_order_relaxed), &ticks)) return 0;
    uint64_t want = atomic_load_explicit(&r->recs[i].start_ticks, memory_order_relaxed);
    return want == 0 || ticks == 0 || want == ticks;
}

/* Take a participant entry: a free one, else one whose process is gone (never one flagged
 * PART_FLAG_SUCCESSOR: only the role's restart may take over its claims). Its claim record starts
 * empty, so a hole its previous owner left is no longer covered and gets repaired. -1: table full. */
static int part_register(RingObject *r, uint32_t role, uint32_t pid, uint32_t flags) {
    uint64_t ticks;
    proc_identity(pid, &ticks);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < MAX_PARTICIPANTS; i++) {
            participant_t *p = &r->parts[i];
            uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);
            uint32_t expect = st;
            if (pass == 0 && st != PART_FREE) continue;
            if (pass == 1) {
                if (st == PART_FREE || st == PART_CLAIMING) continue;
                if (atomic_load_explicit(&p->flags, memory_order_relaxed) & PART_FLAG_SUCCESSOR) continue;
                if (st != PART_EXITED && participant_live(r, i)) continue;
            }
            if (!atomic_compare_exchange_strong_explicit(&p->state, &expect, PART_CLAIMING, memory_order_acq_rel,
                                                         memory_order_relaxed))
                continue;
            /* the old record goes first: the new owner's liveness must never vouch for it */
            atomic_store_explicit(&r->recs[i].lo, -1, memory_order_release);
            atomic_store_explicit(&r->recs[i].hi, -1, memory_order_release);
            atomic_store_explicit(&r->recs[i].start_ticks, ticks, memory_order_relaxed);
            atomic_store_explicit(&p->role, role, memory_order_relaxed);
            atomic_store_explicit(&p->pid, pid, memory_order_release);
            atomic_store_explicit(&p->flags, flags, memory_order_relaxed);
            atomic_store_explicit(&p->heartbeat_ns, mono_ns(), memory_order_relaxed);
            atomic_store_explicit(&p->registered_ns, unix_ns(), memory_order_relaxed);
            atomic_store_explicit(&p->state, PART_RUNNING, memory_order_release);
            return i;
        }
    }
    return -1;
}

/* This object's participant entry, whose claim record its multi-producer claims use: registered on
 * the first claim (and again in a forked child). -1 with an exception set when the table is full:
 * a claim without a record could leave a hole nobody may repair. GIL held. */
static int producer_entry(RingObject *r) {
    uint64_t gen = atomic_load_explicit(&g_fork_gen, memory_order_relaxed);
    if (r->prod_slot >= 0 && r->prod_gen == gen) return r->prod_slot;
    int i = part_register(r, ROLE_PRODUCER, (uint32_t)getpid(), 0);
    if (i < 0) {
        PyErr_Format(PyExc_RuntimeError, "participants table full (%d live participants): a multi-producer claim "
                     "needs an entry for its claim record", MAX_PARTICIPANTS);
        return -1;
    }
    r->prod_slot = i;
    r->prod_gen = gen;
    return i;
}

/* Give this object's producer entry back (close): whatever it claimed and did not publish is then
 * covered by no record and repaired. */
static void producer_entry_release(RingObject *r) {
    if (r->base == NULL || r->prod_slot < 0 || r->prod_gen != atomic_load_explicit(&g_fork_gen, memory_order_relaxed))
        return;
    participant_t *p = &r->parts[r->prod_slot];
    if (atomic_load_explicit(&p->pid, memory_order_relaxed) == (uint32_t)getpid())
        atomic_store_explicit(&p->state, PART_FREE, memory_order_release);
    r->prod_slot = -1;
}

/* The claim record is stored before the claim CAS (whose release orders it first): a repairer that
 * sees the claim sees the record. It spans every claim of this object not yet published (commit()
 * may come in any order), from the oldest one to the newest. */
static inline void claim_record(RingObject *r, int i, int64_t lo, int64_t hi) {
    atomic_store_explicit(&r->recs[i].lo, lo, memory_order_relaxed);
    atomic_store_explicit(&r->recs[i].hi, hi, memory_order_relaxed);
}

/* About to CAS for [lo, hi]. */
static inline void claim_record_try(RingObject *r, int i, int64_t lo, int64_t hi) {
    claim_record(r, i, r->prod_out ? r->prod_lo : lo, hi);
}

/* The CAS for [lo, hi] succeeded. */
static inline void claim_taken(RingObject *r, int64_t lo, int64_t hi) {
    if (!r->prod_out) r->prod_lo = lo;
    r->prod_hi = hi;
    r->prod_out += hi - lo + 1;
}

/* Not claiming (about to wait, or giving up): the record holds what is still outstanding only, so
 * that a failed attempt never covers (and hides) another producer's hole. */
static inline void claim_record_idle(RingObject *r, int i) {
    if (r->prod_out) claim_record(r, i, r->prod_lo, r->prod_hi);
    else claim_record(r, i, -1, -1);
}

/* Advance the shared published cursor over every contiguous fully written slot; whoever finds the
 * next slot written moves the cursor, so a slow producer never blocks a fast one's visibility beyond
 * its own slots. */
static void published_advance(RingObject *r) {
    for (;;) {
        int64_t cur = atomic_load_explicit(&r->published->seq, memory_order_seq_cst);
        int64_t next = cur + 1;
        if (atomic_load_explicit(slot_pubseq(slot_at(r, next)), memory_order_seq_cst) != next) break;
        int64_t hi = next;
        while (hi - cur < r->capacity &&
               atomic_load_explicit(slot_pubseq(slot_at(r, hi + 1)), memory_order_seq_cst) == hi + 1)
            hi++;
        if (atomic_compare_exchange_strong_explicit(&r->published->seq, &cur, hi, memory_order_seq_cst,
                                                    memory_order_seq_cst)) {
            if (atomic_load_explicit(&r->published->waiters, memory_order_seq_cst) != 0 &&
                atomic_exchange_explicit(&r->published->waiters, 0, memory_order_seq_cst) != 0)
                futex_wake_all((void *)&r->published->seq);
        }
    }
}

/* Mark sequence s dropped and fully written. `seen` is the slot's published word as the caller read
 * it; the CAS to a marker (negative, never a sequence) lets exactly one repairer write the length,
 * and a repairer killed after it leaves a word the next one takes over. 1 when this call dropped s. */
static int drop_slot(RingObject *r, int64_t s, int64_t seen) {
    unsigned char *slot = slot_at(r, s);
    if (seen == s) return 0;
    if (!atomic_compare_exchange_strong_explicit(slot_pubseq(slot), &seen, -2 - s, memory_order_seq_cst,
                                                 memory_order_seq_cst))
        return 0;
    atomic_store_explicit(slot_len(slot), DROPPED_LENGTH, memory_order_relaxed);
    atomic_store_explicit(slot_pubseq(slot), s, memory_order_seq_cst);
    return 1;
}

/* Whether a live participant (or a role whose restart repairs it) claims s; live[] caches liveness
 * for one repair (-1 unknown). */
static int claim_covered(RingObject *r, int64_t s, int8_t *live) {
    for (int i = 0; i < MAX_PARTICIPANTS; i++) {
        if (atomic_load_explicit(&r->parts[i].state, memory_order_acquire) == PART_FREE) continue;
        int64_t lo = atomic_load_explicit(&r->recs[i].lo, memory_order_acquire);
        int64_t hi = atomic_load_explicit(&r->recs[i].hi, memory_order_acquire);
        if (s < lo || s > hi) continue;
        if (atomic_load_explicit(&r->parts[i].flags, memory_order_relaxed) & PART_FLAG_SUCCESSOR) return 1;
        if (live[i] < 0) live[i] = (int8_t)participant_live(r, i);
        if (live[i]) return 1;
    }
    return 0;
}

/* Repair the holes at the head of a multi-producer ring (see "Holes" at the top of this file): every
 * unpublished claimed sequence right after the published cursor that no live participant claims is
 * dropped and published. Returns the number of slots dropped (also added to the ring's counter).
 * Needs no GIL. */
static int64_t ring_repair(RingObject *r) {
    if (!(r->flags & FLAG_MULTI_PRODUCER)) return 0;
    int8_t live[MAX_PARTICIPANTS];
    memset(live, -1, sizeof live);
    int64_t dropped = 0;
    for (int64_t step = 0; step <= r->capacity; step++) {
        int64_t pub = atomic_load_explicit(&r->published->seq, memory_order_acquire);
        int64_t claim = atomic_load_explicit(&r->claim->seq, memory_order_acquire);
        if (claim <= pub || pub >= CURSOR_LIMIT) break;
        int64_t s = pub + 1;
        int64_t seen = atomic_load_explicit(slot_pubseq(slot_at(r, s)), memory_order_seq_cst);
        if (seen != s) {
            if (claim_covered(r, s, live)) break;
            /* read again after the records: a producer publishes before it records its next claim */
            seen = atomic_load_explicit(slot_pubseq(slot_at(r, s)), memory_order_seq_cst);
            dropped += drop_slot(r, s, seen);
        }
        published_advance(r);
    }
    if (dropped) atomic_fetch_add_explicit(&r->stop->repaired, (uint64_t)dropped, memory_order_relaxed);
    return dropped;
}

/* A restarted LaneGraph role (`role`): the entries of its earlier runs (flagged PART_FLAG_SUCCESSOR,
 * process gone) are freed, and what they claimed that is still unpublished after the role's own
 * recovery (which publishes the slots its batch record holds) is dropped and published. */
static int64_t successor_repair(RingObject *r, uint32_t role) {
    int64_t dropped = 0;
    for (int i = 0; i < MAX_PARTICIPANTS; i++) {
        participant_t *p = &r->parts[i];
        uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);
        if (st == PART_FREE || st == PART_CLAIMING || atomic_load_explicit(&p->role, memory_order_relaxed) != role ||
            !(atomic_load_explicit(&p->flags, memory_order_relaxed) & PART_FLAG_SUCCESSOR) || participant_live(r, i))
            continue;
        int64_t lo = atomic_load_explicit(&r->recs[i].lo, memory_order_acquire);
        int64_t hi = atomic_load_explicit(&r->recs[i].hi, memory_order_acquire);
        int64_t claim = atomic_load_explicit(&r->claim->seq, memory_order_acquire);
        if (hi > claim) hi = claim;
        if (lo >= 0 && hi >= lo && hi - lo < r->capacity)
            for (int64_t s = lo; s <= hi; s++) {
                int64_t seen = atomic_load_explicit(slot_pubseq(slot_at(r, s)), memory_order_seq_cst);
                if (seen < s) dropped += drop_slot(r, s, seen); /* >= s: published (or reused since) */
            }
        atomic_store_explicit(&p->flags, 0u, memory_order_relaxed);
        atomic_store_explicit(&p->state, PART_FREE, memory_order_release);
    }
    if (dropped) atomic_fetch_add_explicit(&r->stop->repaired, (uint64_t)dropped, memory_order_relaxed);
    published_advance(r);
    return dropped;
}

/* How long a consumer waits on a multi-producer ring's published cursor, with claims outstanding,
 * before it looks for a dead producer (a few /proc reads: never on the hot path). */
#define REPAIR_AFTER_NS 50000000LL

/* Called by a consumer waiting on the published cursor of a multi-producer ring. force: repair now
 * (the stop word is set: no live producer will fill the gap later). */
static void consumer_repair_tick(RingObject *r, int force) {
    int64_t pub = atomic_load_explicit(&r->published->seq, memory_order_acquire);
    if (!force && atomic_load_explicit(&r->stuck_pub, memory_order_relaxed) != pub) {
        atomic_store_explicit(&r->stuck_pub, pub, memory_order_relaxed); /* it moved: no hole (yet) */
        atomic_store_explicit(&r->stuck_since, mono_ns(), memory_order_relaxed);
        return;
    }
    /* the claim cursor's line is the producers' hottest: read it only once the cursor stands still */
    if (atomic_load_explicit(&r->claim->seq, memory_order_acquire) <= pub) return;
    int64_t now = mono_ns();
    if (!force && now - atomic_load_explicit(&r->stuck_since, memory_order_relaxed) < REPAIR_AFTER_NS) return;
    atomic_store_explicit(&r->stuck_since, now, memory_order_relaxed);
    ring_repair(r);
}

/* Whether a waiter's step is one to look for a hole at: a 16th of the polls (a poll of the spin
 * phases takes well under a microsecond), and every futex slice of block. */
static inline int repair_step(const waiter_t *w) {
    return (w->n & 15u) == 15u || (w->strategy == WAIT_BLOCK && w->n > w->spin);
}

/* ============================================================================
 * Producer
 * ============================================================================ */

/* Reserve `n` sequences (<= capacity); returns the first, or a negative STEP_* code. GIL held on entry
 * and exit; released only while waiting. */
static int64_t producer_claim(RingObject *r, int64_t n, int wait, int64_t timeout, int try_only) {
    if (!(r->flags & FLAG_MULTI_PRODUCER)) {
        int64_t first = r->next_seq;
        int64_t need = first + n - 1 - r->capacity; /* every consumer must have released this */
        if (need > r->gating_cache) {
            r->gating_cache = min_gating(r);
            if (need > r->gating_cache) {
                if (try_only) return STEP_TIMEOUT;
                waiter_t w;
                int s;
                PyThreadState *ts = ring_nogil_begin(r);
                waiter_init(&w, wait, timeout, ts);
                s = ring_wait_room(r, need, &w);
                ring_nogil_end(r, w.ts);
                if (s != STEP_OK) return s;
                if (r->base == NULL) return STEP_CLOSED;
            }
        }
        r->next_seq = first + n; /* the claim cell is only written by claim(): publish needs no extra store */
        return first;
    }
    /* multi-producer: record the claim, then CAS the shared claim cursor */
    int me = producer_entry(r);
    if (me < 0) return STEP_ERROR;
    waiter_t w;
    int waiting = 0, recorded = 0;
    int64_t result;
    PyThreadState *ts = NULL;
    for (;;) {
        int64_t cur = atomic_load_explicit(&r->claim->seq, memory_order_acquire);
        int64_t need = cur + n - r->capacity;
        if (need > r->gating_cache) {
            r->gating_cache = min_gating(r);
            if (need > r->gating_cache) {
                if (recorded) {
                    claim_record_idle(r, me);
                    recorded = 0;
                }
                if (try_only) {
                    result = STEP_TIMEOUT;
                    break;
                }
                if (!waiting) {
                    ts = ring_nogil_begin(r);
                    waiter_init(&w, wait, timeout, ts);
                    waiting = 1;
                }
                int s = ring_wait_room(r, need, &w);
                if (s != STEP_OK) {
                    result = s;
                    break;
                }
                continue;
            }
        }
        claim_record_try(r, me, cur + 1, cur + n);
        recorded = 1;
        if (atomic_compare_exchange_weak_explicit(&r->claim->seq, &cur, cur + n, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            claim_taken(r, cur + 1, cur + n);
            result = cur + 1;
            break;
        }
    }
    if (waiting) {
        ring_nogil_end(r, w.ts);
        if (r->base == NULL && result >= 0) result = STEP_CLOSED; /* the claimed slots are gone */
    }
    return result;
}

/* Make [first, last] visible to consumers. */
static void producer_publish(RingObject *r, int64_t first, int64_t last) {
    if (!(r->flags & FLAG_MULTI_PRODUCER)) {
        cell_store_wake(r->published, last);
        return;
    }
    for (int64_t s = first; s <= last; s++)
        atomic_store_explicit(slot_pubseq(slot_at(r, s)), s, memory_order_seq_cst);
    int64_t n = last - first + 1;
    r->prod_out = r->prod_out > n ? r->prod_out - n : 0; /* the record keeps its range until the next claim */
    published_advance(r);
}

static int raise_step(int64_t s, const char *what) {
    if (s == STEP_TIMEOUT) PyErr_Format(PyExc_TimeoutError, "%s: timed out waiting for the slowest consumer", what);
    if (s == STEP_CLOSED) PyErr_Format(PyExc_ValueError, "%s: the ring was closed while waiting", what);
    /* STEP_ERROR: the signal handler's exception is already set */
    return -1;
}

static inline int check_len(RingObject *r, Py_ssize_t len) {
    if ((uint64_t)len > r->slot_bytes) {
        PyErr_Format(PyExc_ValueError, "message of %zd bytes exceeds slot_bytes %u", len, r->slot_bytes);
        return -1;
    }
    return 0;
}

/* The sequence publish() returns, without allocating an int per message.
 *
 * Allocating and freeing an int costs a Python producer about a fifth of its per-message budget.
 * CPython's own zip() and enumerate() reuse their result tuple when nothing but the iterator holds
 * it (refcount 1); this does the same for an int: when the int returned last time has been dropped
 * by the caller, nobody can observe it, so its digits are rewritten in place. If the caller kept it,
 * a fresh int replaces the cached one. CPython 3.11's int layout only (ob_size + 30-bit digits);
 * any other version takes PyLong_FromLongLong. */
static PyObject *seq_result(RingObject *r, int64_t seq) {
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000 && !defined(Py_LIMITED_API)
    if (seq >= 0 && seq < ((int64_t)1 << (2 * PyLong_SHIFT))) {
        PyObject *o = r->seq_cache;
        if (o == NULL || Py_REFCNT(o) != 1) {
            /* a fresh two-digit int (room for any sequence below 2**60) */
            PyObject *fresh = PyLong_FromLongLong((long long)1 << (2 * PyLong_SHIFT - 1));
            if (fresh == NULL) return NULL;
            Py_XSETREF(r->seq_cache, fresh);
            o = fresh;
        }
        PyLongObject *l = (PyLongObject *)o;
        digit lo = (digit)(seq & PyLong_MASK), hi = (digit)((uint64_t)seq >> PyLong_SHIFT);
        l->ob_digit[0] = lo;
        l->ob_digit[1] = hi;
        Py_SET_SIZE(o, hi ? 2 : (lo ? 1 : 0));
        Py_INCREF(o);
        return o;
    }
#endif
    return PyLong_FromLongLong(seq);
}

static PyObject *Ring_publish(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    /* fast path: single producer, bytes, room known from the cached gating minimum. It does exactly
     * what the general path below does for this case, with nothing resolved twice. */
    if (nargs == 1 && kwnames == NULL && r->sp_fast && PyBytes_CheckExact(args[0])) {
        Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
        int64_t seq = r->next_seq;
        if ((uint64_t)len <= r->slot_bytes && seq - r->capacity <= r->gating_cache) {
            unsigned char *slot = slot_at(r, seq);
            atomic_store_explicit(slot_len(slot), (uint32_t)len, memory_order_relaxed);
            memcpy(slot + 8, PyBytes_AS_STRING(args[0]), (size_t)len);
            r->next_seq = seq + 1;
            cell_store_wake(r->published, seq);
            return seq_result(r, seq);
        }
    }
    if (ring_check(r) < 0) return NULL;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "publish(data, wait=WAIT_BACKOFF, timeout_ns=-1)");
        return NULL;
    }
    int wait = WAIT_BACKOFF;
    int64_t timeout = -1;
    if ((nargs > 1 || kwnames != NULL) && parse_wait_timeout(args, nargs, kwnames, 1, &wait, &timeout, NULL) < 0)
        return NULL;
    borrowed_t b;
    if (borrow(args[0], &b) < 0) return NULL;
    if (check_len(r, b.len) < 0) {
        unborrow(&b);
        return NULL;
    }
    int64_t seq = producer_claim(r, 1, wait, timeout, 0);
    if (seq < 0) {
        unborrow(&b);
        raise_step(seq, "publish");
        return NULL;
    }
    unsigned char *slot = slot_at(r, seq);
    atomic_store_explicit(slot_len(slot), (uint32_t)b.len, memory_order_relaxed);
    memcpy(slot_payload(r, slot), b.ptr, (size_t)b.len);
    unborrow(&b);
    producer_publish(r, seq, seq);
    return seq_result(r, seq);
}

static PyObject *Ring_try_publish(RingObject *r, PyObject *arg) {
    if (ring_check(r) < 0) return NULL;
    borrowed_t b;
    if (borrow(arg, &b) < 0) return NULL;
    if (check_len(r, b.len) < 0) {
        unborrow(&b);
        return NULL;
    }
    int64_t seq = producer_claim(r, 1, WAIT_SPIN, 0, 1);
    if (seq < 0) {
        unborrow(&b);
        if (seq == STEP_ERROR) return NULL;
        Py_RETURN_FALSE;
    }
    unsigned char *slot = slot_at(r, seq);
    atomic_store_explicit(slot_len(slot), (uint32_t)b.len, memory_order_relaxed);
    memcpy(slot_payload(r, slot), b.ptr, (size_t)b.len);
    unborrow(&b);
    producer_publish(r, seq, seq);
    Py_RETURN_TRUE;
}

/* Length of a publish_many item without keeping a buffer; -1 with an exception on error. */
static Py_ssize_t item_len(PyObject *o) {
    if (PyBytes_CheckExact(o)) return PyBytes_GET_SIZE(o);
    if (PyByteArray_CheckExact(o)) return PyByteArray_GET_SIZE(o);
    Py_buffer v;
    if (PyObject_GetBuffer(o, &v, PyBUF_SIMPLE) < 0) return -1;
    Py_ssize_t n = v.len;
    PyBuffer_Release(&v);
    return n;
}

static PyObject *Ring_publish_many(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (ring_check(r) < 0) return NULL;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "publish_many(items, wait=WAIT_BACKOFF, timeout_ns=-1)");
        return NULL;
    }
    int wait = WAIT_BACKOFF;
    int64_t timeout = -1;
    if ((nargs > 1 || kwnames != NULL) && parse_wait_timeout(args, nargs, kwnames, 1, &wait, &timeout, NULL) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(args[0], "publish_many expects a sequence of bytes-like items");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len = item_len(items[i]);
        if (len < 0) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "publish_many item %zd is not bytes-like (%.100s)", i,
                             Py_TYPE(items[i])->tp_name);
            }
            Py_DECREF(seq);
            return NULL;
        }
        if ((uint64_t)len > r->slot_bytes) {
            PyErr_Format(PyExc_ValueError, "publish_many item %zd: message of %zd bytes exceeds slot_bytes %u", i,
                         len, r->slot_bytes);
            Py_DECREF(seq);
            return NULL;
        }
    }
    int64_t last = r->next_seq - 1;
    Py_ssize_t i = 0;
    int snapshot = 0;
    while (i < n) {
        /* claim what fits now (at least one slot, waiting only when the ring is full) */
        int64_t want = n - i;
        if (want > r->capacity) want = r->capacity;
        if (!(r->flags & FLAG_MULTI_PRODUCER)) {
            int64_t room = r->gating_cache + r->capacity - r->next_seq + 1;
            if (room < want) {
                r->gating_cache = min_gating(r);
                room = r->gating_cache + r->capacity - r->next_seq + 1;
            }
            if (room >= 1 && room < want) want = room;
        }
        int64_t first = producer_claim(r, want, wait, timeout, 1);
        if (first == STEP_TIMEOUT) {
            /* The claim must wait, which releases the GIL (and runs signal handlers): another thread
             * or a handler may then change or clear the caller's list, freeing its item array. Before
             * the first wait, take a tuple of the items (its own references); the common path that
             * never waits copies nothing. */
            if (!snapshot) {
                PyObject *t = PyTuple_New(n);
                if (t == NULL) {
                    Py_DECREF(seq);
                    return NULL;
                }
                for (Py_ssize_t k = 0; k < n; k++) {
                    Py_INCREF(items[k]);
                    PyTuple_SET_ITEM(t, k, items[k]);
                }
                Py_DECREF(seq);
                seq = t;
                items = PySequence_Fast_ITEMS(seq);
                snapshot = 1;
            }
            first = producer_claim(r, want, wait, timeout, 0);
        }
        if (first < 0) {
            Py_DECREF(seq);
            raise_step(first, "publish_many");
            return NULL;
        }
        for (int64_t k = 0; k < want; k++, i++) {
            borrowed_t b;
            if (borrow(items[i], &b) < 0) {
                /* the item passed the first pass; a buffer that changed under us is still copied as empty */
                PyErr_Clear();
                b.ptr = "";
                b.len = 0;
                b.has_view = 0;
            }
            Py_ssize_t len = b.len > (Py_ssize_t)r->slot_bytes ? (Py_ssize_t)r->slot_bytes : b.len;
            unsigned char *slot = slot_at(r, first + k);
            atomic_store_explicit(slot_len(slot), (uint32_t)len, memory_order_relaxed);
            memcpy(slot_payload(r, slot), b.ptr, (size_t)len);
            unborrow(&b);
        }
        last = first + want - 1;
        producer_publish(r, first, last);
    }
    Py_DECREF(seq);
    return PyLong_FromLongLong(last);
}

static PyObject *Ring_claim(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (ring_check(r) < 0) return NULL;
    int wait = WAIT_BACKOFF;
    int64_t timeout = -1;
    if (parse_wait_timeout(args, nargs, kwnames, 0, &wait, &timeout, NULL) < 0) return NULL;
    if (!(r->flags & FLAG_MULTI_PRODUCER) &&
        atomic_load_explicit(&r->published->seq, memory_order_relaxed) != r->next_seq - 1) {
        PyErr_SetString(PyExc_RuntimeError, "claim: the previous claim is not committed yet (single producer)");
        return NULL;
    }
    int64_t seq = producer_claim(r, 1, wait, timeout, 0);
    if (seq < 0) {
        raise_step(seq, "claim");
        return NULL;
    }
    if (!(r->flags & FLAG_MULTI_PRODUCER)) atomic_store_explicit(&r->claim->seq, seq, memory_order_release);
    atomic_store_explicit(slot_len(slot_at(r, seq)), 0, memory_order_relaxed);
    return PyLong_FromLongLong(seq);
}

static int check_claimed(RingObject *r, int64_t seq) {
    int64_t claimed = (r->flags & FLAG_MULTI_PRODUCER) ? atomic_load_explicit(&r->claim->seq, memory_order_acquire)
                                                       : r->next_seq - 1;
    int64_t pub = atomic_load_explicit(&r->published->seq, memory_order_acquire);
    if (seq < 0 || seq > claimed || seq <= pub - r->capacity) {
        PyErr_Format(PyExc_ValueError, "sequence %lld is not a claimed slot", (long long)seq);
        return -1;
    }
    return 0;
}

static PyObject *Ring_slot(RingObject *r, PyObject *arg) {
    if (ring_check(r) < 0) return NULL;
    int64_t seq = arg_i64(arg);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    if (check_claimed(r, seq) < 0) return NULL;
    return make_view(r, slot_payload(r, slot_at(r, seq)), (Py_ssize_t)r->slot_bytes, 0);
}

static PyObject *Ring_commit(RingObject *r, PyObject *const *args, Py_ssize_t nargs) {
    if (ring_check(r) < 0) return NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "commit(seq, length)");
        return NULL;
    }
    int64_t seq = arg_i64(args[0]);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    long long len = PyLong_AsLongLong(args[1]);
    if (len == -1 && PyErr_Occurred()) return NULL;
    if (check_claimed(r, seq) < 0) return NULL;
    if (len < 0 || len > (long long)r->slot_bytes) {
        PyErr_Format(PyExc_ValueError, "commit length %lld outside 0..%u", len, r->slot_bytes);
        return NULL;
    }
    if (!(r->flags & FLAG_MULTI_PRODUCER) &&
        atomic_load_explicit(&r->published->seq, memory_order_relaxed) != seq - 1) {
        PyErr_Format(PyExc_ValueError, "commit(%lld): single-producer commits go in claim order", (long long)seq);
        return NULL;
    }
    /* multi-producer: this object's claim record must keep covering its other open claims */
    if ((r->flags & FLAG_MULTI_PRODUCER) &&
        (r->prod_out <= 0 || seq < r->prod_lo || seq > r->prod_hi ||
         r->prod_gen != atomic_load_explicit(&g_fork_gen, memory_order_relaxed) ||
         atomic_load_explicit(slot_pubseq(slot_at(r, seq)), memory_order_acquire) == seq)) {
        PyErr_Format(PyExc_ValueError, "commit(%lld): not an open claim of this Ring object (a multi-producer claim "
                     "is committed once, by the object that claimed it)", (long long)seq);
        return NULL;
    }
    atomic_store_explicit(slot_len(slot_at(r, seq)), (uint32_t)len, memory_order_relaxed);
    producer_publish(r, seq, seq);
    Py_RETURN_NONE;
}

/* ============================================================================
 * Consumers
 * ============================================================================ */

static PyObject *Ring_wait_for(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (ring_check(r) < 0) return NULL;
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "wait_for(c, seq, wait=WAIT_BACKOFF, timeout_ns=-1)");
        return NULL;
    }
    long c = PyLong_AsLong(args[0]);
    if (c == -1 && PyErr_Occurred()) return NULL;
    int64_t want = arg_i64(args[1]);
    if (want == -1 && PyErr_Occurred()) return NULL;
    int wait = WAIT_BACKOFF;
    int64_t timeout = -1;
    if (parse_wait_timeout(args, nargs, kwnames, 2, &wait, &timeout, NULL) < 0) return NULL;
    if (check_consumer(r, c) < 0) return NULL;
    seq_line_t *cell;
    int64_t seen;
    int64_t avail = barrier_of(r, (int)c, want, &cell, &seen);
    if (avail >= want) return PyLong_FromLongLong(avail);
    if (timeout == 0) return PyLong_FromLong(-1);
    /* a few polls (~3 us) before paying for releasing and re-taking the GIL */
    uint32_t pauses = 1;
    for (int i = 0; i < 8 && wait != WAIT_YIELD; i++) {
        spin_pause_to(&pauses, wait == WAIT_SPIN ? SPIN_PAUSE_CAP_SPIN : SPIN_PAUSE_CAP);
        avail = barrier_of(r, (int)c, want, &cell, &seen);
        if (avail >= want) return PyLong_FromLongLong(avail);
    }
    waiter_t w;
    PyThreadState *ts = ring_nogil_begin(r);
    waiter_init(&w, wait, timeout, ts);
    avail = ring_wait_barrier(r, (int)c, want, &w);
    ring_nogil_end(r, w.ts);
    if (avail == STEP_ERROR) return NULL;
    if (avail < 0) return PyLong_FromLong(-1);
    return PyLong_FromLongLong(avail);
}

static int check_readable(RingObject *r, int64_t seq) {
    int64_t pub = atomic_load_explicit(&r->published->seq, memory_order_acquire);
    if (seq < 0 || seq > pub || seq <= pub - r->capacity) {
        PyErr_Format(PyExc_ValueError, "sequence %lld is not in the ring (published %lld, capacity %lld)",
                     (long long)seq, (long long)pub, (long long)r->capacity);
        return -1;
    }
    return 0;
}

static PyObject *Ring_read(RingObject *r, PyObject *arg) {
    if (ring_check(r) < 0) return NULL;
    int64_t seq = arg_i64(arg);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    if (check_readable(r, seq) < 0) return NULL;
    unsigned char *slot = slot_at(r, seq);
    uint32_t len = atomic_load_explicit(slot_len(slot), memory_order_relaxed);
    if (len == DROPPED_LENGTH) len = 0;
    if (len > r->slot_bytes) len = r->slot_bytes;
    return make_view(r, slot_payload(r, slot), (Py_ssize_t)len, 1);
}

static PyObject *Ring_read_bytes(RingObject *r, PyObject *arg) {
    if (ring_check(r) < 0) return NULL;
    int64_t seq = arg_i64(arg);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    if (check_readable(r, seq) < 0) return NULL;
    unsigned char *slot = slot_at(r, seq);
    uint32_t len = atomic_load_explicit(slot_len(slot), memory_order_relaxed);
    if (len == DROPPED_LENGTH) len = 0;
    if (len > r->slot_bytes) len = r->slot_bytes;
    return PyBytes_FromStringAndSize((const char *)slot_payload(r, slot), (Py_ssize_t)len);
}

static PyObject *Ring_stage_slot(RingObject *r, PyObject *arg) {
    if (ring_check(r) < 0) return NULL;
    int64_t seq = arg_i64(arg);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    if (check_readable(r, seq) < 0) return NULL;
    return make_view(r, slot_payload(r, slot_at(r, seq)), (Py_ssize_t)r->slot_bytes, 0);
}

static PyObject *Ring_length(RingObject *r, PyObject *arg) {
    if (ring_check(r) < 0) return NULL;
    int64_t seq = arg_i64(arg);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    if (check_readable(r, seq) < 0) return NULL;
    return PyLong_FromUnsignedLong(atomic_load_explicit(slot_len(slot_at(r, seq)), memory_order_relaxed));
}

static int parse_length(RingObject *r, PyObject *o, uint32_t *out) {
    long long n = PyLong_AsLongLong(o);
    if (n == -1 && PyErr_Occurred()) return -1;
    if (n == -1 || n == (long long)DROPPED_LENGTH) {
        *out = DROPPED_LENGTH;
        return 0;
    }
    if (n < 0 || n > (long long)r->slot_bytes) {
        PyErr_Format(PyExc_ValueError, "length %lld outside 0..%u (or DROPPED_LENGTH)", n, r->slot_bytes);
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

static PyObject *Ring_set_length(RingObject *r, PyObject *const *args, Py_ssize_t nargs) {
    if (ring_check(r) < 0) return NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_length(seq, n)");
        return NULL;
    }
    int64_t seq = arg_i64(args[0]);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    uint32_t n;
    if (check_readable(r, seq) < 0 || parse_length(r, args[1], &n) < 0) return NULL;
    atomic_store_explicit(slot_len(slot_at(r, seq)), n, memory_order_relaxed);
    Py_RETURN_NONE;
}

static PyObject *Ring_release(RingObject *r, PyObject *const *args, Py_ssize_t nargs) {
    if (ring_check(r) < 0) return NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "release(c, seq)");
        return NULL;
    }
    long c = PyLong_AsLong(args[0]);
    if (c == -1 && PyErr_Occurred()) return NULL;
    int64_t seq = arg_i64(args[1]);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    if (check_consumer(r, c) < 0) return NULL;
    int64_t cur = atomic_load_explicit(&r->gating[c].seq, memory_order_relaxed);
    int64_t pub = atomic_load_explicit(&r->published->seq, memory_order_acquire);
    if (seq < cur || seq > pub) {
        PyErr_Format(PyExc_ValueError, "release(%ld, %lld): must be in gating %lld .. published %lld", c,
                     (long long)seq, (long long)cur, (long long)pub);
        return NULL;
    }
    cell_store_wake(&r->gating[c], seq);
    Py_RETURN_NONE;
}

static PyObject *Ring_gating(RingObject *r, PyObject *arg) {
    if (ring_check(r) < 0) return NULL;
    long c = PyLong_AsLong(arg);
    if (c == -1 && PyErr_Occurred()) return NULL;
    if (check_consumer(r, c) < 0) return NULL;
    return PyLong_FromLongLong(atomic_load_explicit(&r->gating[c].seq, memory_order_acquire));
}

static PyObject *Ring_next_for(RingObject *r, PyObject *arg) {
    if (ring_check(r) < 0) return NULL;
    long c = PyLong_AsLong(arg);
    if (c == -1 && PyErr_Occurred()) return NULL;
    if (check_consumer(r, c) < 0) return NULL;
    return PyLong_FromLongLong(sat_add(atomic_load_explicit(&r->gating[c].seq, memory_order_acquire), 1));
}

static PyObject *Ring_cursor(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    if (ring_check(r) < 0) return NULL;
    return PyLong_FromLongLong(atomic_load_explicit(&r->published->seq, memory_order_acquire));
}

/* ============================================================================
 * Crash-atomic modification (redo record) and recovery
 * ============================================================================ */

/* Finish a pending redo of consumer c; gating = max(gating, done). Returns 1 when a copy was redone. */
static int ring_recover(RingObject *r, int c) {
    redo_line_t *rd = &r->redo[c];
    int64_t g = atomic_load_explicit(&r->gating[c].seq, memory_order_acquire);
    int64_t done = atomic_load_explicit(&rd->done, memory_order_acquire);
    int64_t marker = atomic_load_explicit(&rd->marker, memory_order_acquire);
    int64_t base = g > done ? g : done;
    int redone = 0;
    if (marker > base) {
        uint32_t len = atomic_load_explicit(&rd->length, memory_order_acquire);
        unsigned char *slot = slot_at(r, marker);
        /* the redo length comes from the file: never store (or copy) more than a slot holds */
        if (len != DROPPED_LENGTH && len > r->slot_bytes) len = r->slot_bytes;
        if (len != DROPPED_LENGTH) memcpy(slot_payload(r, slot), scratch_of(r, c), len);
        atomic_store_explicit(slot_len(slot), len, memory_order_relaxed);
        atomic_store_explicit(&rd->done, marker, memory_order_release);
        base = marker;
        redone = 1;
    }
    if (base > g) cell_store_wake(&r->gating[c], base);
    return redone;
}

static PyObject *Ring_recover(RingObject *r, PyObject *arg) {
    if (ring_check(r) < 0) return NULL;
    long c = PyLong_AsLong(arg);
    if (c == -1 && PyErr_Occurred()) return NULL;
    if (check_consumer(r, c) < 0) return NULL;
    return PyBool_FromLong(ring_recover(r, (int)c));
}

static PyObject *Ring_modify_begin(RingObject *r, PyObject *const *args, Py_ssize_t nargs) {
    if (ring_check(r) < 0) return NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "modify_begin(c, seq)");
        return NULL;
    }
    long c = PyLong_AsLong(args[0]);
    if (c == -1 && PyErr_Occurred()) return NULL;
    int64_t seq = arg_i64(args[1]);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    if (check_consumer(r, c) < 0 || check_readable(r, seq) < 0) return NULL;
    redo_line_t *rd = &r->redo[c];
    int64_t marker = atomic_load_explicit(&rd->marker, memory_order_acquire);
    int64_t done = atomic_load_explicit(&rd->done, memory_order_acquire);
    if (marker > done) {
        PyErr_Format(PyExc_RuntimeError, "modify_begin: consumer %ld has an unfinished redo of %lld (call recover)",
                     c, (long long)marker);
        return NULL;
    }
    unsigned char *slot = slot_at(r, seq);
    uint32_t len = atomic_load_explicit(slot_len(slot), memory_order_relaxed);
    unsigned char *scr = scratch_of(r, (int)c);
    if (len != DROPPED_LENGTH) memcpy(scr, slot_payload(r, slot), len > r->slot_bytes ? r->slot_bytes : len);
    return make_view(r, scr, (Py_ssize_t)r->slot_bytes, 0);
}

static void redo_apply(RingObject *r, int c, int64_t seq, uint32_t len) {
    redo_line_t *rd = &r->redo[c];
    unsigned char *slot = slot_at(r, seq);
    atomic_store_explicit(&rd->length, len, memory_order_relaxed);
    atomic_store_explicit(&rd->marker, seq, memory_order_release);
    if (len != DROPPED_LENGTH) memcpy(slot_payload(r, slot), scratch_of(r, c), len);
    atomic_store_explicit(slot_len(slot), len, memory_order_relaxed);
    atomic_store_explicit(&rd->done, seq, memory_order_release);
}

static PyObject *Ring_modify_commit(RingObject *r, PyObject *const *args, Py_ssize_t nargs) {
    if (ring_check(r) < 0) return NULL;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "modify_commit(c, seq, length)");
        return NULL;
    }
    long c = PyLong_AsLong(args[0]);
    if (c == -1 && PyErr_Occurred()) return NULL;
    int64_t seq = arg_i64(args[1]);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    uint32_t len;
    if (check_consumer(r, c) < 0 || check_readable(r, seq) < 0 || parse_length(r, args[2], &len) < 0) return NULL;
    if (seq <= atomic_load_explicit(&r->redo[c].done, memory_order_acquire) ||
        seq <= atomic_load_explicit(&r->gating[c].seq, memory_order_acquire)) {
        PyErr_Format(PyExc_ValueError, "modify_commit(%ld, %lld): already applied", c, (long long)seq);
        return NULL;
    }
    redo_apply(r, (int)c, seq, len);
    Py_RETURN_NONE;
}

/* ============================================================================
 * Builtin stage loop and counting sink (GIL released)
 * ============================================================================ */

static inline void heartbeat_store(RingObject *r, int slot) {
    if (slot >= 0) atomic_store_explicit(&r->parts[slot].heartbeat_ns, mono_ns(), memory_order_relaxed);
}

static int check_part_slot(long slot) {
    if (slot < -1 || slot >= MAX_PARTICIPANTS) {
        PyErr_Format(PyExc_IndexError, "participant slot %ld out of range", slot);
        return -1;
    }
    return 0;
}

/* After a small batch, let the producer write a few more messages before this consumer pulls the
 * cursor's cache line away from it again. A consumer that re-polls right after every two or three
 * messages makes nearly every producer store wait for that line: measured here, a Python producer
 * publishing into a builtin stage ran at 41 M msgs/s without the gap and 62-66 M/s with it. Only a
 * message arriving during the gap waits (at most ~0.8 us, ~0.2 us for WAIT_SPIN); a lone message
 * is seen at once, since the consumer is already waiting for it. */
#define BATCH_GAP_SMALL 64
#define BATCH_GAP_PAUSES 32
#define BATCH_GAP_PAUSES_SPIN 8
static inline void batch_gap(int64_t batch, int wait) {
    if (batch >= BATCH_GAP_SMALL) return;
    int pauses = wait == WAIT_SPIN ? BATCH_GAP_PAUSES_SPIN : BATCH_GAP_PAUSES;
    for (int i = 0; i < pauses; i++) cpu_relax();
}

static PyObject *Ring_run_builtin(RingObject *r, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"c", "op", "delta", "wait", "heartbeat_slot", NULL};
    int c, op, delta, wait = WAIT_BACKOFF, hb = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iii|i$i", kwlist, &c, &op, &delta, &wait, &hb)) return NULL;
    if (ring_check(r) < 0 || check_consumer(r, c) < 0 || check_wait(wait) < 0 || check_part_slot(hb) < 0)
        return NULL;
    if (op != OP_IDENTITY && op != OP_ADD_U8) {
        PyErr_Format(PyExc_ValueError, "unknown builtin op %d", op);
        return NULL;
    }
    if (delta < 0 || delta > 255) {
        PyErr_Format(PyExc_ValueError, "delta %d outside 0..255", delta);
        return NULL;
    }
    Py_INCREF(r); /* the mapping must outlive the loop even if close() is called from another thread */
    waiter_t w;
    PyThreadState *ts = ring_nogil_begin(r);
    ring_recover(r, c);
    int64_t next = atomic_load_explicit(&r->gating[c].seq, memory_order_acquire) + 1;
    int64_t result = 0;
    const uint8_t d8 = (uint8_t)delta;
    unsigned char *scr = scratch_of(r, c);
    heartbeat_store(r, hb);
    for (;;) {
        waiter_init(&w, wait, -1, ts);
        int64_t avail = ring_wait_barrier(r, c, next, &w);
        ts = w.ts;
        if (avail == WAIT_STOPPED) {
            result = next - 1;
            break;
        }
        if (avail < 0) {
            result = avail;
            break;
        }
        if (op == OP_ADD_U8) {
            for (int64_t s = next; s <= avail; s++) {
                unsigned char *slot = slot_at(r, s);
                uint32_t len = atomic_load_explicit(slot_len(slot), memory_order_relaxed);
                if (len == DROPPED_LENGTH) continue;
                if (len > r->slot_bytes) len = r->slot_bytes;
                const unsigned char *src = slot_payload(r, slot);
                for (uint32_t i = 0; i < len; i++) scr[i] = (unsigned char)(src[i] + d8);
                redo_apply(r, c, s, len);
            }
        }
        cell_store_wake(&r->gating[c], avail);
        heartbeat_store(r, hb);
        batch_gap(avail - next + 1, wait);
        next = avail + 1;
    }
    ring_nogil_end(r, ts);
    Py_DECREF(r);
    if (result == STEP_ERROR) return NULL;
    return PyLong_FromLongLong(result);
}

static PyObject *Ring_count_sink(RingObject *r, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"c", "wait", "heartbeat_slot", NULL};
    int c, wait = WAIT_BACKOFF, hb = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|i$i", kwlist, &c, &wait, &hb)) return NULL;
    if (ring_check(r) < 0 || check_consumer(r, c) < 0 || check_wait(wait) < 0 || check_part_slot(hb) < 0)
        return NULL;
    Py_INCREF(r);
    waiter_t w;
    PyThreadState *ts = ring_nogil_begin(r);
    int64_t next = atomic_load_explicit(&r->gating[c].seq, memory_order_acquire) + 1;
    long long msgs = 0, bytes = 0;
    int failed = 0;
    for (;;) {
        waiter_init(&w, wait, -1, ts);
        int64_t avail = ring_wait_barrier(r, c, next, &w);
        ts = w.ts;
        if (avail == WAIT_STOPPED) break;
        if (avail < 0) {
            failed = 1;
            break;
        }
        for (int64_t s = next; s <= avail; s++) {
            uint32_t len = atomic_load_explicit(slot_len(slot_at(r, s)), memory_order_relaxed);
            if (len == DROPPED_LENGTH) continue;
            msgs++;
            bytes += len;
        }
        cell_store_wake(&r->gating[c], avail);
        heartbeat_store(r, hb);
        batch_gap(avail - next + 1, wait);
        next = avail + 1;
    }
    ring_nogil_end(r, ts);
    Py_DECREF(r);
    if (failed) return NULL;
    return Py_BuildValue("(LL)", msgs, bytes);
}

/* ============================================================================
 * Python stage functions called by native loops (the four stage forms)
 * ============================================================================
 *
 * A stage function is classified once, by the caller, into a form:
 *   MAP      f(msg) -> bytes-like (the new message) | None (drop); msg is a bytes copy
 *   FILTER   f(msg) -> None (drop) | anything (keep unchanged); msg is a bytes copy
 *   INPLACE  f(slot, length) -> new length 0..limit | DROP (-1); slot is a writable view of the
 *            consumer's scratch (the whole slot size) holding the message in [:length]
 *   READONLY f(slot, length) -> length | DROP; slot is a read-only view of the slot itself
 * Nothing is made per message that can be made once: the INPLACE view is made once per scratch;
 * the READONLY view is made once and pointed at each slot in turn (its buffer pointer is moved;
 * a view the function keeps past its call stays valid memory, since it keeps the mapping alive,
 * but shows whatever slot the loop looks at later); the MAP/FILTER bytes object is rewritten in
 * place while nobody but the loop holds it (a function that keeps it gets a fresh one next time),
 * like seq_result's int; the length int is reused while the length repeats.
 */

#define FORM_MAP 0
#define FORM_FILTER 1
#define FORM_INPLACE 2
#define FORM_READONLY 3

#define CALL_KEEP 0   /* the message stays as it is */
#define CALL_NEW 1    /* the new message is in the scratch, *out_len bytes */
#define CALL_DROP 2
#define CALL_ERROR -1 /* a Python exception is set */

/* CPython 3.11..3.13 lay out bytes as {var head, ob_shash, ob_sval}: a bytes object nobody else
 * holds may be rewritten (its cached hash reset). Other versions allocate one per message. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_LIMITED_API)
#define STAGE_REUSE_BYTES 1
#else
#define STAGE_REUSE_BYTES 0
#endif

typedef struct {
    PyObject *fn;
    int form;
    uint32_t limit;         /* longest message the function may produce (its view's length) */
    unsigned char *scratch; /* MAP: where a returned message is copied; INPLACE: what the view shows */
    PyObject *view;         /* INPLACE: writable view of the scratch; READONLY: the moving read-only view */
    PyObject *view_owner;   /* what the view is exported from, to remake it if the function released it:
                             * a Ring (a view of view_len bytes at the view's pointer) or any buffer */
    Py_ssize_t view_len;
    PyObject *msg;          /* MAP/FILTER: the bytes object handed to the function */
    Py_ssize_t msg_cap;
    PyObject *len_obj;      /* the last length int passed */
    long len_val;
    PyObject *contract;     /* the class raised for a bad return (borrowed), or NULL: TypeError/ValueError */
} stagecall_t;

static inline PyObject *contract_type(stagecall_t *sc, PyObject *fallback) {
    return sc->contract != NULL ? sc->contract : fallback;
}

static int check_form(int form) {
    if (form < FORM_MAP || form > FORM_READONLY) {
        PyErr_Format(PyExc_ValueError, "unknown stage form %d (FORM_MAP..FORM_READONLY)", form);
        return -1;
    }
    return 0;
}

static PyObject *stagecall_make_view(stagecall_t *sc, unsigned char *ptr) {
    if (Py_IS_TYPE(sc->view_owner, &RingType))
        return make_view((RingObject *)sc->view_owner, ptr, sc->view_len, sc->form == FORM_READONLY);
    return PyMemoryView_FromObject(sc->view_owner);
}

/* `scratch` (limit bytes) backs MAP results and the INPLACE view. `owner` exports the views: for
 * INPLACE a Ring (whose consumer scratch `scratch` is) or a writable buffer object holding `scratch`;
 * for READONLY the Ring whose slots the view shows (first at `ro_ptr`). */
static int stagecall_init(stagecall_t *sc, PyObject *fn, int form, uint32_t limit, unsigned char *scratch,
                          PyObject *owner, unsigned char *ro_ptr) {
    memset(sc, 0, sizeof *sc);
    sc->fn = fn;
    sc->form = form;
    sc->limit = limit;
    sc->scratch = scratch;
    sc->len_val = -1;
    if (form == FORM_INPLACE || form == FORM_READONLY) {
        Py_INCREF(owner);
        sc->view_owner = owner;
        sc->view_len = form == FORM_INPLACE ? (Py_ssize_t)limit : (Py_ssize_t)((RingObject *)owner)->slot_bytes;
        sc->view = stagecall_make_view(sc, form == FORM_INPLACE ? scratch : ro_ptr);
        if (sc->view == NULL) return -1;
    }
    return 0;
}

/* The view to pass for a message at `ptr` (READONLY: the slot; INPLACE: the scratch), remade when
 * the function released the previous one. Borrowed reference, or NULL with an exception. */
static PyObject *stagecall_view(stagecall_t *sc, unsigned char *ptr) {
    PyMemoryViewObject *mv = (PyMemoryViewObject *)sc->view;
    if (mv->flags & _Py_MEMORYVIEW_RELEASED) {
        PyObject *fresh = stagecall_make_view(sc, ptr);
        if (fresh == NULL) return NULL;
        Py_SETREF(sc->view, fresh);
        return fresh;
    }
    if (sc->form == FORM_READONLY) {
        mv->view.buf = ptr;
        mv->hash = -1;
    }
    return sc->view;
}

static void stagecall_clear(stagecall_t *sc) {
    Py_CLEAR(sc->view);
    Py_CLEAR(sc->view_owner);
    Py_CLEAR(sc->msg);
    Py_CLEAR(sc->len_obj);
}

/* The bytes object holding src[0..len) (a reference owned by sc), or NULL with an exception. */
static PyObject *stagecall_bytes(stagecall_t *sc, const unsigned char *src, uint32_t len) {
#if STAGE_REUSE_BYTES
    PyObject *m = sc->msg;
    if (m != NULL && Py_REFCNT(m) == 1 && (Py_ssize_t)len <= sc->msg_cap) {
        char *p = PyBytes_AS_STRING(m);
        memcpy(p, src, len);
        p[len] = 0;
        Py_SET_SIZE(m, (Py_ssize_t)len);
        _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wdeprecated-declarations\"")
        ((PyBytesObject *)m)->ob_shash = -1;
        _Pragma("GCC diagnostic pop")
        return m;
    }
    /* kept by the function (or too small): a fresh one, with room to grow while it is reused */
    Py_ssize_t cap = (Py_ssize_t)len;
    if (m != NULL && Py_REFCNT(m) == 1 && sc->msg_cap * 2 > cap) cap = sc->msg_cap * 2;
    if (cap > (Py_ssize_t)sc->limit && (Py_ssize_t)len <= (Py_ssize_t)sc->limit) cap = (Py_ssize_t)sc->limit;
    if (cap < 2) cap = 2; /* sizes 0 and 1 would return CPython's shared singletons */
    Py_CLEAR(sc->msg);
    m = PyBytes_FromStringAndSize(NULL, cap);
    if (m == NULL) return NULL;
    sc->msg = m;
    sc->msg_cap = cap;
    char *p = PyBytes_AS_STRING(m);
    memcpy(p, src, len);
    p[len] = 0;
    Py_SET_SIZE(m, (Py_ssize_t)len);
    return m;
#else
    Py_XSETREF(sc->msg, PyBytes_FromStringAndSize((const char *)src, (Py_ssize_t)len));
    return sc->msg;
#endif
}

static PyObject *stagecall_len(stagecall_t *sc, uint32_t len) {
    if ((long)len != sc->len_val || sc->len_obj == NULL) {
        PyObject *o = PyLong_FromUnsignedLong(len);
        if (o == NULL) return NULL;
        Py_XSETREF(sc->len_obj, o);
        sc->len_val = (long)len;
    }
    return sc->len_obj;
}

/* Call the stage function on the message src[0..len). Returns CALL_KEEP, CALL_NEW (new message in
 * sc->scratch, *out_len bytes), CALL_DROP, or CALL_ERROR with an exception set. */
static int stagecall_run(stagecall_t *sc, unsigned char *src, uint32_t len, uint32_t *out_len) {
    PyObject *args[3] = {NULL, NULL, NULL};
    PyObject *ret;
    switch (sc->form) {
    case FORM_MAP:
    case FORM_FILTER: {
        PyObject *m = stagecall_bytes(sc, src, len);
        if (m == NULL) return CALL_ERROR;
        args[1] = m;
        ret = PyObject_Vectorcall(sc->fn, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (ret == NULL) return CALL_ERROR;
        if (ret == Py_None) {
            Py_DECREF(ret);
            return CALL_DROP;
        }
        if (sc->form == FORM_FILTER || ret == m) { /* the same bytes object: nothing changed */
            Py_DECREF(ret);
            return CALL_KEEP;
        }
        const char *p;
        Py_ssize_t n;
        Py_buffer v;
        int has_view = 0;
        if (PyBytes_CheckExact(ret)) {
            p = PyBytes_AS_STRING(ret);
            n = PyBytes_GET_SIZE(ret);
        } else if (PyBytes_Check(ret) || PyByteArray_Check(ret) || PyMemoryView_Check(ret)) {
            if (PyObject_GetBuffer(ret, &v, PyBUF_SIMPLE) < 0) {
                PyErr_Clear();
                PyErr_Format(contract_type(sc, PyExc_TypeError),
                             "returned a non-contiguous %.100s; a map stage returns C-contiguous bytes, bytearray or "
                             "memoryview, or None", Py_TYPE(ret)->tp_name);
                Py_DECREF(ret);
                return CALL_ERROR;
            }
            has_view = 1;
            p = (const char *)v.buf;
            n = v.len;
        } else {
            PyObject *tname = PyType_GetName(Py_TYPE(ret)); /* type(ret).__name__, as StageCall says it */
            if (tname != NULL) {
                PyErr_Format(contract_type(sc, PyExc_TypeError),
                             "returned %U; a map stage returns bytes, bytearray, memoryview or None", tname);
                Py_DECREF(tname);
            }
            Py_DECREF(ret);
            return CALL_ERROR;
        }
        if ((uint64_t)n > sc->limit) {
            PyErr_Format(contract_type(sc, PyExc_ValueError), "returned %zd bytes, more than slot_bytes=%u", n,
                         sc->limit);
            if (has_view) PyBuffer_Release(&v);
            Py_DECREF(ret);
            return CALL_ERROR;
        }
        memcpy(sc->scratch, p, (size_t)n);
        *out_len = (uint32_t)n;
        if (has_view) PyBuffer_Release(&v);
        Py_DECREF(ret);
        return CALL_NEW;
    }
    case FORM_INPLACE: {
        PyObject *lo = stagecall_len(sc, len);
        PyObject *view = lo != NULL ? stagecall_view(sc, sc->scratch) : NULL;
        if (view == NULL) return CALL_ERROR;
        memcpy(sc->scratch, src, len);
        args[1] = view;
        args[2] = lo;
        ret = PyObject_Vectorcall(sc->fn, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (ret == NULL) return CALL_ERROR;
        if (!PyLong_CheckExact(ret)) {
            PyErr_Format(contract_type(sc, PyExc_TypeError), "returned %R; expected a length in 0..%u or DROP", ret,
                         sc->limit);
            Py_DECREF(ret);
            return CALL_ERROR;
        }
        int overflow = 0;
        long long n = PyLong_AsLongLongAndOverflow(ret, &overflow);
        if (!overflow && n == -1) {
            Py_DECREF(ret);
            return CALL_DROP;
        }
        if (overflow || n < 0 || n > (long long)sc->limit) {
            PyErr_Format(contract_type(sc, PyExc_ValueError), "returned %R; expected a length in 0..%u or DROP", ret,
                         sc->limit);
            Py_DECREF(ret);
            return CALL_ERROR;
        }
        Py_DECREF(ret);
        *out_len = (uint32_t)n;
        return CALL_NEW;
    }
    default: { /* FORM_READONLY */
        PyObject *lo = stagecall_len(sc, len);
        PyObject *view = lo != NULL ? stagecall_view(sc, src) : NULL;
        if (view == NULL) return CALL_ERROR;
        args[1] = view;
        args[2] = lo;
        ret = PyObject_Vectorcall(sc->fn, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (ret == NULL) return CALL_ERROR;
        int overflow = 0;
        long long n = PyLong_CheckExact(ret) ? PyLong_AsLongLongAndOverflow(ret, &overflow) : -2;
        if (!overflow && (n == (long long)len || n == -1)) {
            Py_DECREF(ret);
            return n == -1 ? CALL_DROP : CALL_KEEP;
        }
        PyErr_Format(contract_type(sc, PyExc_ValueError),
                     "returned %R; a read-only stage returns its length (%u) or DROP", ret, len);
        Py_DECREF(ret);
        return CALL_ERROR;
    }
    }
}

/* Attach the failing message's sequence to the pending exception (best effort: the exception
 * propagates either way). */
static void set_failed_seq(int64_t seq) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL) {
        PyObject *s = PyLong_FromLongLong(seq);
        if (s == NULL || PyObject_SetAttrString(value, "failed_seq", s) < 0) PyErr_Clear();
        Py_XDECREF(s);
        if (tb != NULL) PyException_SetTraceback(value, tb);
    }
    PyErr_Restore(type, value, tb);
}

/* Messages processed between two releases of the gating cell (and heartbeats): large enough to
 * amortise them, small enough that a slow stage still beats and lets the producer go on. */
#define STAGE_MAX_BATCH 4096
/* A long batch of a slow function must not hold back what it has finished: every `every` messages the
 * loop reads the clock (a tick: heartbeat, signal handlers); once STAGE_RELEASE_NS passed since the
 * last release, what is done is released (published) at once. A function slower than STAGE_SLOW_NS
 * a message is ticked after every message, a fast one every 64 (the clock read costs ~20 ns). */
#define STAGE_RELEASE_NS 1000000LL
#define STAGE_SLOW_NS 10000LL
#define TICK_NONE 0
#define TICK 1
#define TICK_RELEASE 2

typedef struct {
    uint32_t every, count;
    int64_t last_tick, last_release;
} pacer_t;

static inline void pacer_init(pacer_t *p) {
    p->every = 1; /* learn the function's speed from its first message */
    p->count = 0;
    p->last_tick = p->last_release = mono_ns();
}

static inline int pacer_tick(pacer_t *p) {
    if (++p->count < p->every) return TICK_NONE;
    int64_t now = mono_ns();
    p->every = now - p->last_tick > (int64_t)p->count * STAGE_SLOW_NS ? 1 : 64;
    p->count = 0;
    p->last_tick = now;
    if (now - p->last_release < STAGE_RELEASE_NS) return TICK;
    p->last_release = now;
    return TICK_RELEASE;
}

/* A batch ended (everything released): the next release is due STAGE_RELEASE_NS after the last tick. */
static inline void pacer_released(pacer_t *p) { p->last_release = p->last_tick; }

static PyObject *Ring_run_stage(RingObject *r, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"c", "fn", "form", "wait", "heartbeat_slot", "side_effect", "contract_error", NULL};
    int c, form, wait = WAIT_BACKOFF, hb = -1, side_effect = 0;
    PyObject *fn, *contract = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOi|i$ipO", kwlist, &c, &fn, &form, &wait, &hb, &side_effect,
                                     &contract))
        return NULL;
    if (contract != Py_None && !PyExceptionClass_Check(contract)) {
        PyErr_SetString(PyExc_TypeError, "run_stage: contract_error must be an exception class");
        return NULL;
    }
    if (ring_check(r) < 0 || check_consumer(r, c) < 0 || check_wait(wait) < 0 || check_part_slot(hb) < 0 ||
        check_form(form) < 0)
        return NULL;
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "run_stage: fn must be callable, not %.100s", Py_TYPE(fn)->tp_name);
        return NULL;
    }
    const int writes = form == FORM_MAP || form == FORM_INPLACE;
    unsigned char *scr = scratch_of(r, c);
    stagecall_t sc;
    int rc = stagecall_init(&sc, fn, form, r->slot_bytes, scr, (PyObject *)r, slot_payload(r, r->slots));
    sc.contract = contract != Py_None ? contract : NULL;
    if (rc < 0) {
        stagecall_clear(&sc);
        return NULL;
    }
    Py_INCREF(fn);
    Py_INCREF(r);
    r->busy++; /* the mapping outlives the loop even if close() runs meanwhile (the GIL comes and goes) */
    if (writes) ring_recover(r, c);
    int64_t next = atomic_load_explicit(&r->gating[c].seq, memory_order_acquire) + 1;
    int64_t result = 0;
    int failed = 0;
    pacer_t pacer;
    pacer_init(&pacer);
    heartbeat_store(r, hb);
    for (;;) {
        seq_line_t *cell;
        int64_t seen;
        int64_t avail = barrier_of(r, c, next, &cell, &seen);
        if (avail < next) {
            waiter_t w;
            PyThreadState *ts = PyEval_SaveThread();
            waiter_init(&w, wait, -1, ts);
            avail = ring_wait_barrier(r, c, next, &w);
            PyEval_RestoreThread(w.ts);
            if (avail == WAIT_STOPPED) {
                result = next - 1;
                break;
            }
            if (avail < 0) { /* a signal handler raised */
                failed = 1;
                break;
            }
        }
        if (avail - next >= STAGE_MAX_BATCH) avail = next + STAGE_MAX_BATCH - 1;
        for (int64_t s = next; s <= avail; s++) {
            unsigned char *slot = slot_at(r, s);
            uint32_t len = atomic_load_explicit(slot_len(slot), memory_order_relaxed);
            if (len != DROPPED_LENGTH) {
                if (len > r->slot_bytes) len = r->slot_bytes;
                uint32_t out_len = 0;
                int outcome = stagecall_run(&sc, slot_payload(r, slot), len, &out_len);
                if (outcome == CALL_ERROR) {
                    /* everything before s is done; s stays unconsumed (not lost) */
                    if (s - 1 > atomic_load_explicit(&r->gating[c].seq, memory_order_relaxed))
                        cell_store_wake(&r->gating[c], s - 1);
                    set_failed_seq(s);
                    failed = 1;
                    break;
                }
                if (outcome == CALL_NEW)
                    redo_apply(r, c, s, out_len);
                else if (outcome == CALL_DROP) {
                    if (writes)
                        redo_apply(r, c, s, DROPPED_LENGTH);
                    else /* read-only: marking it dropped is idempotent, no redo needed */
                        atomic_store_explicit(slot_len(slot), DROPPED_LENGTH, memory_order_relaxed);
                }
            }
            if (side_effect) cell_store_wake(&r->gating[c], s); /* at most one repeat after a crash */
            int tick = pacer_tick(&pacer);
            if (tick != TICK_NONE) {
                heartbeat_store(r, hb);
                if (tick == TICK_RELEASE && !side_effect) cell_store_wake(&r->gating[c], s);
                if (PyErr_CheckSignals() < 0) {
                    cell_store_wake(&r->gating[c], s);
                    failed = 1;
                    break;
                }
            }
        }
        if (failed) break;
        if (!side_effect) cell_store_wake(&r->gating[c], avail);
        heartbeat_store(r, hb);
        pacer_released(&pacer);
        next = avail + 1;
    }
    stagecall_clear(&sc);
    r->busy--;
    if (r->closed) ring_unmap(r);
    Py_DECREF(r);
    Py_DECREF(fn);
    if (failed) return NULL;
    return PyLong_FromLongLong(result);
}

/* ============================================================================
 * Batched egress: every available message in one call
 * ============================================================================ */

static PyObject *Ring_drain(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (ring_check(r) < 0) return NULL;
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "drain(c, max_n, wait=WAIT_BACKOFF, timeout_ns=-1, *, release=True)");
        return NULL;
    }
    long c = PyLong_AsLong(args[0]);
    if (c == -1 && PyErr_Occurred()) return NULL;
    long long max_n = PyLong_AsLongLong(args[1]);
    if (max_n == -1 && PyErr_Occurred()) return NULL;
    int wait = WAIT_BACKOFF, release = 1;
    int64_t timeout = -1;
    if (parse_wait_timeout(args, nargs, kwnames, 2, &wait, &timeout, &release) < 0) return NULL;
    if (check_consumer(r, c) < 0) return NULL;
    if (max_n < 1) {
        PyErr_Format(PyExc_ValueError, "drain: max_n must be >= 1, got %lld", max_n);
        return NULL;
    }
    int64_t next = atomic_load_explicit(&r->gating[c].seq, memory_order_acquire) + 1;
    seq_line_t *cell;
    int64_t seen;
    int64_t avail = barrier_of(r, (int)c, next, &cell, &seen);
    if (avail < next && timeout != 0) {
        waiter_t w;
        PyThreadState *ts = ring_nogil_begin(r);
        waiter_init(&w, wait, timeout, ts);
        avail = ring_wait_barrier(r, (int)c, next, &w);
        ring_nogil_end(r, w.ts);
        if (avail == STEP_ERROR) return NULL;
        if (r->base == NULL) {
            PyErr_SetString(PyExc_ValueError, "drain: the ring was closed while waiting");
            return NULL;
        }
    }
    if (avail < next) return Py_BuildValue("([]iL)", 0, (long long)-1);
    if (avail - next >= max_n) avail = next + max_n - 1;
    PyObject *list = PyList_New(avail - next + 1);
    if (list == NULL) return NULL;
    Py_ssize_t k = 0;
    long long dropped = 0;
    for (int64_t s = next; s <= avail; s++) {
        unsigned char *slot = slot_at(r, s);
        uint32_t len = atomic_load_explicit(slot_len(slot), memory_order_relaxed);
        if (len == DROPPED_LENGTH) {
            dropped++;
            continue;
        }
        if (len > r->slot_bytes) len = r->slot_bytes;
        PyObject *b = PyBytes_FromStringAndSize((const char *)slot_payload(r, slot), (Py_ssize_t)len);
        if (b == NULL) {
            Py_SET_SIZE(list, k);
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k++, b);
    }
    Py_SET_SIZE(list, k); /* the dropped ones left no item */
    if (release) cell_store_wake(&r->gating[c], avail);
    PyObject *out = Py_BuildValue("(NLL)", list, dropped, (long long)avail);
    return out;
}

/* ============================================================================
 * File edges: framed input from a file descriptor into rings, framed output from a ring into a
 * file descriptor, parsed and encoded here with the GIL released
 * ============================================================================
 *
 * Ingest(fd, framing, rings, ...).run() reads the descriptor in large chunks and publishes every
 * message it parses (framings lines / hex / len32, codecs in framing.c) into one ring or into N
 * shard rings routed like byteor.runtime.sharding.Router (single, round robin, or CRC-32 of the
 * bytes:offset:len window modulo N). Egress(fd, framing, ring, c, ...).run() consumes cell c and
 * writes every message framed (hex / lines / ascii / raw / len32) through a buffer that is written
 * whenever the ring is idle and at least every flush_interval_ns while messages flow; the cell is
 * released only up to what has been written, and last_seq tells the caller which messages left.
 * Both end on stop() (from another thread, or from a Python signal handler) and run Python signal
 * handlers about every 50 ms. While run() runs, the Ingest is its rings' producer and the Egress its
 * cell's consumer: nothing else may publish into / consume from them meanwhile.
 */

#include <poll.h>
#include <sys/eventfd.h>

#define FRAME_LINES 0
#define FRAME_HEX 1
#define FRAME_LEN32 2
#define FRAME_RAW 3
#define FRAME_ASCII 4

#define ROUTE_SINGLE 0
#define ROUTE_ROUND_ROBIN 1
#define ROUTE_KEY 2

#define EDGE_EOF 1     /* Ingest: end of input; Egress: the ring is stopped and drained */
#define EDGE_STOPPED 2 /* stop() */
#define EDGE_FAIL -1   /* described in the edge's error fields; raised once the GIL is back */
#define EDGE_PYERR -3  /* a Python exception is set (a signal handler raised) */

#define EDGE_POLL_MS 50
/* Messages published between two stores of a ring's cursor (and between two clock reads). */
#define INGEST_PUBLISH_EVERY 256

static const char *const FRAME_NAMES[] = {"lines", "hex", "len32", "raw", "ascii"};

static int frame_code(PyObject *name, int output) {
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (s != NULL)
        for (int i = 0; i < (output ? 5 : 3); i++)
            if (strcmp(s, FRAME_NAMES[i]) == 0) return i;
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError, "unknown %s framing %R (one of %s)", output ? "output" : "input", name,
                 output ? "hex, ascii, raw, lines, len32" : "lines, hex, len32");
    return -1;
}

/* Run Python signal handlers (taking the GIL for the moment). -1 when a handler raised. */
static int edge_signals(PyThreadState **ts) {
    PyEval_RestoreThread(*ts);
    int r = PyErr_CheckSignals();
    *ts = PyEval_SaveThread();
    return r;
}

typedef struct {
    int fd;
    int stop_fd;          /* eventfd written by stop(): wakes a poll on the data descriptor */
    _Atomic int stop;
    int running;
    PyObject *label;      /* names the option in error messages ("--input") */
    PyObject *error_type; /* raised for malformed input */
    int err;              /* EDGE_FAIL detail: one of EERR_* */
    long long err_a, err_b, err_c, err_d;
    int err_errno;
} edge_t;

static int edge_init(edge_t *e, int fd, PyObject *label, PyObject *error_type) {
    e->fd = fd;
    e->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->stop_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    atomic_store(&e->stop, 0);
    e->running = 0;
    Py_INCREF(label);
    e->label = label;
    Py_INCREF(error_type);
    e->error_type = error_type;
    e->err = 0;
    return 0;
}

static void edge_clear(edge_t *e) {
    if (e->stop_fd >= 0) close(e->stop_fd);
    e->stop_fd = -1;
    Py_CLEAR(e->label);
    Py_CLEAR(e->error_type);
}

static inline int edge_stopped(edge_t *e) { return atomic_load_explicit(&e->stop, memory_order_acquire) != 0; }

static void edge_stop(edge_t *e) {
    atomic_store_explicit(&e->stop, 1, memory_order_release);
    uint64_t one = 1;
    if (e->stop_fd >= 0) (void)!write(e->stop_fd, &one, sizeof one);
}

/* Wait until fd is ready for `events` (or stop() is called), running signal handlers every
 * EDGE_POLL_MS. EDGE_OK when ready, EDGE_STOPPED, EDGE_PYERR. */
static int edge_poll(edge_t *e, short events, PyThreadState **ts) {
    for (;;) {
        if (edge_stopped(e)) return EDGE_STOPPED;
        struct pollfd p[2] = {{e->fd, events, 0}, {e->stop_fd, POLLIN, 0}};
        int n = poll(p, 2, EDGE_POLL_MS);
        if (n < 0 && errno != EINTR) return 0; /* let the read/write report the descriptor's error */
        if (edge_signals(ts) < 0) return EDGE_PYERR;
        if (n > 0 && p[0].revents) return 0;
    }
}

/* ---- Ingest ---------------------------------------------------------------------------------- */

#define EERR_LINE_TOO_LONG 1  /* a: line, b: length (-1 unknown), c: slot_bytes */
#define EERR_HEX_CHAR 2       /* a: line, b: the byte */
#define EERR_HEX_ODD 3        /* a: line, b: digits */
#define EERR_LEN32_PREFIX 4   /* a: byte offset */
#define EERR_LEN32_BODY 5     /* a: byte offset, b: announced, c: present */
#define EERR_LEN32_BIG 6      /* a: message index, b: byte offset, c: announced, d: slot_bytes */
#define EERR_READ 7           /* err_errno */
#define EERR_WRITE 8          /* err_errno */
#define EERR_HEX_LINE_HUGE 9  /* a: line, b: buffer bytes */

typedef struct {
    PyObject_HEAD
    edge_t e;
    int framing;
    int route;
    int wait;
    uint32_t key_off, key_len;
    uint32_t slot_bytes;      /* the smallest of the rings' */
    Py_ssize_t n_rings;
    RingObject **rings;
    int64_t *pending;         /* per ring: last written, not yet published sequence (-1: none) */
    long long *per_ring;
    unsigned char *buf;       /* unparsed input: buf[0..len) */
    size_t cap, len, max_cap;
    unsigned char *tmp;       /* a decoded hex message */
    long long line;           /* lines consumed (lines, hex) */
    long long offset;         /* input bytes before buf[0] */
    long long messages;
    long long bytes_read;
    uint64_t rr_next;
    int unpublished;
    int eof;
} IngestObject;

static PyTypeObject IngestType;

static void ingest_publish_pending(IngestObject *g) {
    for (Py_ssize_t k = 0; k < g->n_rings; k++)
        if (g->pending[k] >= 0) {
            cell_store_wake(g->rings[k]->published, g->pending[k]);
            g->pending[k] = -1;
        }
    g->unpublished = 0;
}

/* Wait (GIL released) until every consumer of r has released `need`, or stop(). */
static int ingest_wait_room(IngestObject *g, RingObject *r, int64_t need, PyThreadState **ts) {
    waiter_t w;
    waiter_init(&w, g->wait, -1, *ts);
    w.participants = r->n_consumers + 1;
    int rc = EDGE_EOF - 1; /* 0: room */
    for (;;) {
        seq_line_t *lag = NULL;
        int64_t seen = 0, m = INT64_MAX;
        for (uint32_t i = 0; i < r->n_consumers; i++) {
            int64_t gs = atomic_load_explicit(&r->gating[i].seq, memory_order_acquire);
            if (gs < m) m = gs;
            if (gs < need && lag == NULL) {
                lag = &r->gating[i];
                seen = gs;
            }
        }
        if (m >= need) {
            r->gating_cache = m;
            break;
        }
        if (edge_stopped(&g->e)) {
            rc = EDGE_STOPPED;
            break;
        }
        if (waiter_step(&w, lag, seen) != STEP_OK) { /* no deadline: a signal handler raised */
            rc = EDGE_PYERR;
            break;
        }
    }
    *ts = w.ts;
    return rc;
}

/* Publish one message into the ring its route chooses. 0, EDGE_STOPPED or EDGE_PYERR. */
static int ingest_put(IngestObject *g, const unsigned char *p, uint32_t n, PyThreadState **ts) {
    Py_ssize_t k = 0;
    if (g->route == ROUTE_ROUND_ROBIN) {
        k = (Py_ssize_t)(g->rr_next % (uint64_t)g->n_rings);
        g->rr_next++;
    } else if (g->route == ROUTE_KEY) {
        uint32_t off = g->key_off < n ? g->key_off : n;
        uint32_t len = g->key_len < n - off ? g->key_len : n - off;
        k = (Py_ssize_t)(byteor_crc32(0, p + off, len) % (uint32_t)g->n_rings);
    }
    RingObject *r = g->rings[k];
    int64_t seq;
    if (!(r->flags & FLAG_MULTI_PRODUCER)) {
        seq = r->next_seq;
        int64_t need = seq - r->capacity;
        if (need > r->gating_cache) {
            r->gating_cache = min_gating(r);
            if (need > r->gating_cache) {
                ingest_publish_pending(g); /* what is written becomes visible before waiting */
                int rc = ingest_wait_room(g, r, need, ts);
                if (rc != 0) return rc;
            }
        }
        r->next_seq = seq + 1;
    } else {
        for (;;) {
            int64_t cur = atomic_load_explicit(&r->claim->seq, memory_order_acquire);
            int64_t need = cur + 1 - r->capacity;
            if (need > r->gating_cache) {
                r->gating_cache = min_gating(r);
                if (need > r->gating_cache) {
                    ingest_publish_pending(g);
                    int rc = ingest_wait_room(g, r, need, ts);
                    if (rc != 0) return rc;
                    continue;
                }
            }
            if (atomic_compare_exchange_weak_explicit(&r->claim->seq, &cur, cur + 1, memory_order_acq_rel,
                                                      memory_order_relaxed)) {
                seq = cur + 1;
                break;
            }
        }
    }
    unsigned char *slot = slot_at(r, seq);
    atomic_store_explicit(slot_len(slot), n, memory_order_relaxed);
    memcpy(slot_payload(r, slot), p, n);
    if (r->flags & FLAG_MULTI_PRODUCER)
        producer_publish(r, seq, seq);
    else
        g->pending[k] = seq;
    g->messages++;
    g->per_ring[k]++;
    if (++g->unpublished >= INGEST_PUBLISH_EVERY) ingest_publish_pending(g);
    return 0;
}

static int ingest_fail(IngestObject *g, int err, long long a, long long b, long long c) {
    g->e.err = err;
    g->e.err_a = a;
    g->e.err_b = b;
    g->e.err_c = c;
    return EDGE_FAIL;
}

/* Parse and publish the complete messages of buf[0..len) (all of it when final). Sets *used to the
 * bytes consumed. 0, or an EDGE_* code (the messages before a bad one are published). */
static int ingest_parse(IngestObject *g, int final, size_t *used, PyThreadState **ts) {
    unsigned char *b = g->buf;
    size_t len = g->len, pos = 0;
    int rc = 0;
    if (g->framing == FRAME_LEN32) {
        while (len - pos >= 4) {
            uint32_t n = (uint32_t)b[pos] | ((uint32_t)b[pos + 1] << 8) | ((uint32_t)b[pos + 2] << 16) |
                         ((uint32_t)b[pos + 3] << 24);
            if (n > g->slot_bytes) {
                rc = ingest_fail(g, EERR_LEN32_BIG, g->messages, g->offset + (long long)pos, n);
                g->e.err_d = g->slot_bytes;
                break;
            }
            if (len - pos - 4 < n) break;
            rc = ingest_put(g, b + pos + 4, n, ts);
            if (rc != 0) break;
            pos += 4 + (size_t)n;
        }
        if (rc == 0 && final && pos < len) {
            if (len - pos < 4)
                rc = ingest_fail(g, EERR_LEN32_PREFIX, g->offset + (long long)pos, 0, 0);
            else {
                uint32_t n = (uint32_t)b[pos] | ((uint32_t)b[pos + 1] << 8) | ((uint32_t)b[pos + 2] << 16) |
                             ((uint32_t)b[pos + 3] << 24);
                rc = ingest_fail(g, EERR_LEN32_BODY, g->offset + (long long)pos, n, (long long)(len - pos - 4));
            }
        }
        *used = pos;
        return rc;
    }
    for (;;) {
        unsigned char *nl = len > pos ? memchr(b + pos, '\n', len - pos) : NULL;
        size_t end;
        if (nl != NULL)
            end = (size_t)(nl - b);
        else if (final && pos < len)
            end = len; /* the last line has no newline: still a message */
        else
            break;
        long long lineno = g->line + 1;
        const unsigned char *line = b + pos;
        size_t n = end - pos;
        if (g->framing == FRAME_LINES) {
            if (n > g->slot_bytes) {
                rc = ingest_fail(g, EERR_LINE_TOO_LONG, lineno, (long long)n, g->slot_bytes);
                break;
            }
            rc = ingest_put(g, line, (uint32_t)n, ts);
        } else {
            size_t out_len = 0, digits = 0;
            int bad = -1;
            int h = byteor_hex_line(line, n, g->tmp, g->slot_bytes, &out_len, &bad, &digits);
            if (h == BYTEOR_HEX_BAD_CHAR) {
                rc = ingest_fail(g, EERR_HEX_CHAR, lineno, bad, 0);
                break;
            }
            if (h == BYTEOR_HEX_ODD) {
                rc = ingest_fail(g, EERR_HEX_ODD, lineno, (long long)digits, 0);
                break;
            }
            if (h == BYTEOR_HEX_TOO_LONG) {
                rc = ingest_fail(g, EERR_LINE_TOO_LONG, lineno, (long long)out_len, g->slot_bytes);
                break;
            }
            if (h == BYTEOR_HEX_OK) rc = ingest_put(g, g->tmp, (uint32_t)out_len, ts);
        }
        if (rc != 0) break;
        g->line = lineno;
        pos = end + (nl != NULL);
        if (nl == NULL) break;
    }
    *used = pos;
    return rc;
}

static int ingest_loop(IngestObject *g, PyThreadState **ts) {
    struct stat st;
    int regular = fstat(g->e.fd, &st) == 0 && S_ISREG(st.st_mode);
    int64_t next_check = mono_ns() + SIGNAL_CHECK_NS;
    int rc = 0;
    while (rc == 0) {
        if (edge_stopped(&g->e)) {
            rc = EDGE_STOPPED;
            break;
        }
        if (g->eof) {
            rc = EDGE_EOF;
            break;
        }
        if (g->len == g->cap) {
            /* the buffer holds one unfinished line: grow, unless it is already longer than any
             * message can be (then say so rather than buffer on) */
            if (g->cap > g->max_cap) {
                if (g->framing == FRAME_LINES)
                    rc = ingest_fail(g, EERR_LINE_TOO_LONG, g->line + 1, -1, g->slot_bytes);
                else
                    rc = ingest_fail(g, EERR_HEX_LINE_HUGE, g->line + 1, (long long)g->cap, 0);
                break;
            }
            size_t ncap = g->cap * 2 > g->max_cap + 1 ? g->max_cap + 1 : g->cap * 2;
            unsigned char *nb = realloc(g->buf, ncap);
            if (nb == NULL) {
                g->e.err_errno = ENOMEM;
                rc = ingest_fail(g, EERR_READ, 0, 0, 0);
                break;
            }
            g->buf = nb;
            g->cap = ncap;
        }
        if (!regular) {
            /* a pipe or terminal may stay silent: wait for data, a stop() or a signal */
            ingest_publish_pending(g);
            rc = edge_poll(&g->e, POLLIN, ts);
            if (rc != 0) break;
        }
        ssize_t got = read(g->e.fd, g->buf + g->len, g->cap - g->len);
        if (got < 0) {
            if (errno == EINTR) {
                if (edge_signals(ts) < 0) rc = EDGE_PYERR;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ingest_publish_pending(g);
                rc = edge_poll(&g->e, POLLIN, ts);
                continue;
            }
            g->e.err_errno = errno;
            rc = ingest_fail(g, EERR_READ, 0, 0, 0);
            break;
        }
        int final = got == 0;
        g->len += (size_t)got;
        g->bytes_read += got;
        size_t used = 0;
        rc = ingest_parse(g, final, &used, ts);
        if (used) {
            memmove(g->buf, g->buf + used, g->len - used);
            g->len -= used;
            g->offset += (long long)used;
        }
        if (final && rc == 0) g->eof = 1;
        if (rc == 0) {
            int64_t now = mono_ns();
            if (now >= next_check) {
                next_check = now + SIGNAL_CHECK_NS;
                ingest_publish_pending(g);
                if (edge_signals(ts) < 0) rc = EDGE_PYERR;
            }
        }
    }
    ingest_publish_pending(g);
    return rc;
}

static void edge_raise(edge_t *e) {
    PyObject *label = e->label;
    PyObject *err = e->error_type;
    switch (e->err) {
    case EERR_LINE_TOO_LONG:
        if (e->err_b >= 0)
            PyErr_Format(err, "%U line %lld: message of %lld bytes exceeds slot_bytes=%lld", label, e->err_a, e->err_b,
                         e->err_c);
        else
            PyErr_Format(err, "%U line %lld: message of more than %lld bytes exceeds slot_bytes=%lld", label, e->err_a,
                         e->err_c, e->err_c);
        break;
    case EERR_HEX_CHAR: {
        Py_UCS4 ch = e->err_b < 0x80 ? (Py_UCS4)e->err_b : 0xFFFD; /* decode("ascii", "replace") */
        PyObject *s = PyUnicode_FromOrdinal((int)ch);
        if (s != NULL) {
            PyErr_Format(err, "%U line %lld is not valid hex: invalid character %R", label, e->err_a, s);
            Py_DECREF(s);
        }
        break;
    }
    case EERR_HEX_ODD:
        PyErr_Format(err, "%U line %lld is not valid hex: odd number of hex digits (%lld)", label, e->err_a, e->err_b);
        break;
    case EERR_HEX_LINE_HUGE:
        PyErr_Format(err, "%U line %lld is longer than %lld bytes", label, e->err_a, e->err_b);
        break;
    case EERR_LEN32_PREFIX:
        PyErr_Format(err, "%U len32: truncated length prefix at byte %lld", label, e->err_a);
        break;
    case EERR_LEN32_BODY:
        PyErr_Format(err, "%U len32: message at byte %lld announces %lld bytes, only %lld follow", label, e->err_a,
                     e->err_b, e->err_c);
        break;
    case EERR_LEN32_BIG:
        PyErr_Format(err, "%U len32: message %lld at byte %lld is %lld bytes, larger than the slot (%lld bytes)",
                     label, e->err_a, e->err_b, e->err_c, e->err_d);
        break;
    default: {
        int code = e->err_errno;
        PyObject *msg = PyUnicode_FromFormat("%U: %s failed: %s", label, e->err == EERR_WRITE ? "write" : "read",
                                             code == EPIPE ? "the reader closed it (broken pipe)" : strerror(code));
        if (msg != NULL) {
            PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", code, msg); /* errno picks the subclass */
            if (exc != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
            }
            Py_DECREF(msg);
        }
    }
    }
    e->err = 0;
}

static void ingest_free_buffers(IngestObject *g) {
    free(g->buf);
    free(g->tmp);
    PyMem_Free(g->pending);
    PyMem_Free(g->per_ring);
    g->buf = g->tmp = NULL;
    g->pending = NULL;
    g->per_ring = NULL;
}

static void Ingest_dealloc(IngestObject *g) {
    for (Py_ssize_t k = 0; k < g->n_rings; k++) Py_XDECREF(g->rings[k]);
    PyMem_Free(g->rings);
    ingest_free_buffers(g);
    edge_clear(&g->e);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyObject *Ingest_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "framing", "rings", "route", "key_offset", "key_len", "wait", "label", "error",
                             "chunk_bytes", NULL};
    int fd, wait = WAIT_BACKOFF;
    PyObject *framing, *rings_obj, *route_obj = NULL, *label = NULL, *error_type = PyExc_ValueError;
    long long key_off = 0, key_len = 0, chunk = 1 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOO|$OLLiUOL", kwlist, &fd, &framing, &rings_obj, &route_obj,
                                     &key_off, &key_len, &wait, &label, &error_type, &chunk))
        return NULL;
    int fr = frame_code(framing, 0);
    if (fr < 0 || check_wait(wait) < 0) return NULL;
    if (!PyExceptionClass_Check(error_type)) {
        PyErr_SetString(PyExc_TypeError, "Ingest: error must be an exception class");
        return NULL;
    }
    int route = ROUTE_SINGLE;
    if (route_obj != NULL) {
        const char *rs = PyUnicode_Check(route_obj) ? PyUnicode_AsUTF8(route_obj) : NULL;
        if (rs != NULL && strcmp(rs, "single") == 0) route = ROUTE_SINGLE;
        else if (rs != NULL && strcmp(rs, "round_robin") == 0) route = ROUTE_ROUND_ROBIN;
        else if (rs != NULL && strcmp(rs, "key") == 0) route = ROUTE_KEY;
        else {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "unknown route %R (single, round_robin, key)", route_obj);
            return NULL;
        }
    }
    if (key_off < 0 || key_off > UINT32_MAX || key_len < 0 || key_len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "Ingest: key_offset and key_len must be in 0..2**32-1");
        return NULL;
    }
    if (chunk < 4096 || chunk > (1LL << 30)) {
        PyErr_Format(PyExc_ValueError, "Ingest: chunk_bytes %lld outside 4096..2**30", chunk);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(rings_obj, "Ingest: rings must be a sequence of Ring");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || (route == ROUTE_SINGLE && n != 1)) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "Ingest: route %s needs %s ring, got %zd", route == ROUTE_SINGLE ? "single" :
                     "round_robin/key", route == ROUTE_SINGLE ? "exactly one" : "at least one", n);
        return NULL;
    }
    IngestObject *g = (IngestObject *)type->tp_alloc(type, 0);
    if (g == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    g->e.stop_fd = -1;
    g->rings = PyMem_Calloc((size_t)n, sizeof(RingObject *));
    g->pending = PyMem_Malloc((size_t)n * sizeof(int64_t));
    g->per_ring = PyMem_Calloc((size_t)n, sizeof(long long));
    if (g->rings == NULL || g->pending == NULL || g->per_ring == NULL) {
        Py_DECREF(seq);
        Py_DECREF(g);
        return PyErr_NoMemory();
    }
    g->n_rings = n;
    uint32_t slot = UINT32_MAX;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, k);
        if (!Py_IS_TYPE(o, &RingType)) {
            PyErr_Format(PyExc_TypeError, "Ingest: rings[%zd] is %.100s, not a Ring", k, Py_TYPE(o)->tp_name);
            Py_DECREF(seq);
            Py_DECREF(g);
            return NULL;
        }
        Py_INCREF(o);
        g->rings[k] = (RingObject *)o;
        g->pending[k] = -1;
        if (ring_check((RingObject *)o) < 0) {
            Py_DECREF(seq);
            Py_DECREF(g);
            return NULL;
        }
        if (((RingObject *)o)->slot_bytes < slot) slot = ((RingObject *)o)->slot_bytes;
    }
    Py_DECREF(seq);
    PyObject *lab = label != NULL ? Py_NewRef(label) : PyUnicode_FromString("--input");
    if (lab == NULL || edge_init(&g->e, fd, lab, error_type) < 0) {
        Py_XDECREF(lab);
        Py_DECREF(g);
        return NULL;
    }
    Py_DECREF(lab); /* edge_init took its own reference */
    g->framing = fr;
    g->route = route;
    g->wait = wait;
    g->key_off = (uint32_t)key_off;
    g->key_len = (uint32_t)key_len;
    g->slot_bytes = slot;
    /* the longest unfinished line worth buffering: one message (a hex line may also hold spaces) */
    g->max_cap = fr == FRAME_LINES ? (size_t)slot + 1
                 : fr == FRAME_HEX ? 4 * (size_t)slot + (1 << 20)
                                   : (size_t)slot + 4;
    g->cap = (size_t)chunk;
    if (g->cap < g->max_cap + 1 && fr == FRAME_LEN32) g->cap = g->max_cap + 1;
    g->buf = malloc(g->cap);
    g->tmp = malloc((size_t)slot + 1);
    if (g->buf == NULL || g->tmp == NULL) {
        Py_DECREF(g);
        return PyErr_NoMemory();
    }
    return (PyObject *)g;
}

static PyObject *Ingest_run(IngestObject *g, PyObject *Py_UNUSED(ignored)) {
    if (g->e.running) {
        PyErr_SetString(PyExc_RuntimeError, "Ingest.run: already running");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < g->n_rings; k++)
        if (ring_check(g->rings[k]) < 0) return NULL;
    g->e.running = 1;
    Py_INCREF(g);
    for (Py_ssize_t k = 0; k < g->n_rings; k++) g->rings[k]->busy++;
    PyThreadState *ts = PyEval_SaveThread();
    int rc = ingest_loop(g, &ts);
    PyEval_RestoreThread(ts);
    for (Py_ssize_t k = 0; k < g->n_rings; k++) {
        g->rings[k]->busy--;
        if (g->rings[k]->closed) ring_unmap(g->rings[k]);
    }
    g->e.running = 0;
    PyObject *result = NULL;
    if (rc == EDGE_FAIL)
        edge_raise(&g->e);
    else if (rc != EDGE_PYERR)
        result = PyLong_FromLongLong(g->messages);
    Py_DECREF(g);
    return result;
}

static PyObject *Ingest_stop(IngestObject *g, PyObject *Py_UNUSED(ignored)) {
    edge_stop(&g->e);
    Py_RETURN_NONE;
}

static PyObject *Ingest_get_messages(IngestObject *g, void *c) { return PyLong_FromLongLong(g->messages); }
static PyObject *Ingest_get_bytes(IngestObject *g, void *c) { return PyLong_FromLongLong(g->bytes_read); }
static PyObject *Ingest_get_eof(IngestObject *g, void *c) { return PyBool_FromLong(g->eof); }
static PyObject *Ingest_get_line(IngestObject *g, void *c) { return PyLong_FromLongLong(g->line); }
static PyObject *Ingest_get_per_ring(IngestObject *g, void *c) {
    PyObject *t = PyTuple_New(g->n_rings);
    if (t == NULL) return NULL;
    for (Py_ssize_t k = 0; k < g->n_rings; k++) PyTuple_SET_ITEM(t, k, PyLong_FromLongLong(g->per_ring[k]));
    return t;
}

static PyMethodDef Ingest_methods[] = {
    {"run", (PyCFunction)Ingest_run, METH_NOARGS,
     "run() -> messages published so far: read, parse and publish until end of input or stop()"},
    {"stop", (PyCFunction)Ingest_stop, METH_NOARGS, "stop(): end run() at the next message (any thread)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Ingest_getset[] = {
    {"messages", (getter)Ingest_get_messages, NULL, "messages published", NULL},
    {"bytes_read", (getter)Ingest_get_bytes, NULL, "bytes read from the descriptor", NULL},
    {"eof", (getter)Ingest_get_eof, NULL, "the whole input was read and published", NULL},
    {"lines", (getter)Ingest_get_line, NULL, "lines consumed (lines and hex framings)", NULL},
    {"per_ring", (getter)Ingest_get_per_ring, NULL, "messages published into each ring", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject IngestType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "byteor._native.Ingest",
    .tp_basicsize = sizeof(IngestObject),
    .tp_dealloc = (destructor)Ingest_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Ingest(fd, framing, rings, *, route='single', key_offset=0, key_len=0, wait=WAIT_BACKOFF, "
              "label='--input', error=ValueError, chunk_bytes=1<<20): framed input from fd into rings",
    .tp_methods = Ingest_methods,
    .tp_getset = Ingest_getset,
    .tp_new = Ingest_new,
};

/* ---- Egress ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    edge_t e;
    int framing;
    int wait;
    int c;
    RingObject *ring;
    int64_t flush_ns;
    unsigned char *buf;
    size_t cap, len;
    int64_t buffered_to;       /* last sequence encoded into buf */
    _Atomic int64_t last_seq;  /* last sequence written to the descriptor (and released) */
    long long messages, dropped, bytes_written;
} EgressObject;

static PyTypeObject EgressType;

/* Write buf[0..len) completely (short writes, EINTR, a non-blocking descriptor), then release the
 * cell up to what was encoded. 0, EDGE_STOPPED, EDGE_PYERR or EDGE_FAIL (errno kept). */
static int egress_flush(EgressObject *x, PyThreadState **ts) {
    size_t off = 0;
    while (off < x->len) {
        ssize_t n = write(x->e.fd, x->buf + off, x->len - off);
        if (n >= 0) {
            off += (size_t)n;
            x->bytes_written += n;
            continue;
        }
        if (errno == EINTR) {
            if (edge_signals(ts) < 0) return EDGE_PYERR;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = edge_poll(&x->e, POLLOUT, ts);
            if (rc != 0) {
                memmove(x->buf, x->buf + off, x->len - off); /* keep what is not written */
                x->len -= off;
                return rc;
            }
            continue;
        }
        x->e.err = EERR_WRITE;
        x->e.err_errno = errno;
        memmove(x->buf, x->buf + off, x->len - off);
        x->len -= off;
        return EDGE_FAIL;
    }
    x->len = 0;
    if (x->buffered_to > atomic_load_explicit(&x->last_seq, memory_order_relaxed)) {
        cell_store_wake(&x->ring->gating[x->c], x->buffered_to);
        atomic_store_explicit(&x->last_seq, x->buffered_to, memory_order_release);
    }
    return 0;
}

static inline size_t egress_encode(EgressObject *x, const unsigned char *p, uint32_t n, unsigned char *out) {
    switch (x->framing) {
    case FRAME_HEX: {
        size_t k = byteor_hex_encode(p, n, out);
        out[k] = '\n';
        return k + 1;
    }
    case FRAME_ASCII: {
        size_t k = byteor_utf8_replace(p, n, out);
        out[k] = '\n';
        return k + 1;
    }
    case FRAME_LEN32:
        out[0] = (unsigned char)n;
        out[1] = (unsigned char)(n >> 8);
        out[2] = (unsigned char)(n >> 16);
        out[3] = (unsigned char)(n >> 24);
        memcpy(out + 4, p, n);
        return (size_t)n + 4;
    case FRAME_RAW:
        memcpy(out, p, n);
        return n;
    default: /* FRAME_LINES */
        memcpy(out, p, n);
        out[n] = '\n';
        return (size_t)n + 1;
    }
}

static inline size_t egress_worst(int framing, uint32_t n) {
    return framing == FRAME_HEX ? 2 * (size_t)n + 1 : framing == FRAME_ASCII ? 3 * (size_t)n + 1 : (size_t)n + 4;
}

static int egress_loop(EgressObject *x, PyThreadState **ts) {
    RingObject *r = x->ring;
    int c = x->c;
    int64_t next = atomic_load_explicit(&r->gating[c].seq, memory_order_acquire) + 1;
    int64_t last_flush = mono_ns();
    x->buffered_to = next - 1;
    for (;;) {
        if (edge_stopped(&x->e)) {
            int rc = egress_flush(x, ts);
            return rc != 0 ? rc : EDGE_STOPPED;
        }
        seq_line_t *cell;
        int64_t seen;
        int64_t avail = barrier_of(r, c, next, &cell, &seen);
        if (avail < next) {
            /* idle: what is buffered goes out now, then wait (in slices, to see stop() and signals) */
            if (x->len > 0 || x->buffered_to > atomic_load_explicit(&x->last_seq, memory_order_relaxed)) {
                int rc = egress_flush(x, ts);
                if (rc != 0) return rc;
                last_flush = mono_ns();
            }
            waiter_t w;
            waiter_init(&w, x->wait, EDGE_POLL_MS * 1000000LL, *ts);
            avail = ring_wait_barrier(r, c, next, &w);
            *ts = w.ts;
            if (avail == WAIT_STOPPED) return EDGE_EOF;
            if (avail == STEP_ERROR) return EDGE_PYERR;
            if (avail < next) continue; /* a slice ended */
        }
        for (int64_t s = next; s <= avail; s++) {
            unsigned char *slot = slot_at(r, s);
            uint32_t len = atomic_load_explicit(slot_len(slot), memory_order_relaxed);
            if (len == DROPPED_LENGTH) {
                x->dropped++;
            } else {
                if (len > r->slot_bytes) len = r->slot_bytes;
                if (x->cap - x->len < egress_worst(x->framing, len)) {
                    int rc = egress_flush(x, ts);
                    if (rc != 0) return rc;
                    last_flush = mono_ns();
                }
                x->len += egress_encode(x, slot_payload(r, slot), len, x->buf + x->len);
                x->messages++;
            }
            x->buffered_to = s;
            if (((s - next) & 63) == 63) {
                int64_t now = mono_ns();
                if (now - last_flush >= x->flush_ns) { /* a steady stream still reaches the file */
                    int rc = egress_flush(x, ts);
                    if (rc != 0) return rc;
                    last_flush = now;
                }
            }
        }
        next = avail + 1;
        int64_t now = mono_ns();
        if (now - last_flush >= x->flush_ns) {
            int rc = egress_flush(x, ts);
            if (rc != 0) return rc;
            last_flush = now;
        }
    }
}

static void Egress_dealloc(EgressObject *x) {
    Py_XDECREF(x->ring);
    free(x->buf);
    edge_clear(&x->e);
    Py_TYPE(x)->tp_free((PyObject *)x);
}

static PyObject *Egress_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "framing", "ring", "c", "wait", "label", "flush_interval_ns", "buffer_bytes", NULL};
    int fd, c, wait = WAIT_BACKOFF;
    PyObject *framing, *ring, *label = NULL;
    long long flush_ns = 200000000LL, bufsize = 1 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOO!i|$iULL", kwlist, &fd, &framing, &RingType, &ring, &c, &wait,
                                     &label, &flush_ns, &bufsize))
        return NULL;
    int fr = frame_code(framing, 1);
    RingObject *r = (RingObject *)ring;
    if (fr < 0 || check_wait(wait) < 0 || ring_check(r) < 0 || check_consumer(r, c) < 0) return NULL;
    if (flush_ns < 1000000LL || flush_ns > 1000000000LL) {
        PyErr_Format(PyExc_ValueError, "Egress: flush_interval_ns %lld outside 1 ms..1 s", flush_ns);
        return NULL;
    }
    if (bufsize < 4096 || bufsize > (1LL << 30)) {
        PyErr_Format(PyExc_ValueError, "Egress: buffer_bytes %lld outside 4096..2**30", bufsize);
        return NULL;
    }
    EgressObject *x = (EgressObject *)type->tp_alloc(type, 0);
    if (x == NULL) return NULL;
    x->e.stop_fd = -1;
    Py_INCREF(ring);
    x->ring = r;
    PyObject *lab = label != NULL ? Py_NewRef(label) : PyUnicode_FromString("--output-file");
    if (lab == NULL || edge_init(&x->e, fd, lab, PyExc_ValueError) < 0) {
        Py_XDECREF(lab);
        Py_DECREF(x);
        return NULL;
    }
    Py_DECREF(lab);
    x->framing = fr;
    x->wait = wait;
    x->c = c;
    x->flush_ns = flush_ns;
    size_t worst = egress_worst(fr, r->slot_bytes);
    x->cap = (size_t)bufsize > worst ? (size_t)bufsize : worst; /* any one message fits after a flush */
    x->buf = malloc(x->cap);
    if (x->buf == NULL) {
        Py_DECREF(x);
        return PyErr_NoMemory();
    }
    atomic_store(&x->last_seq, atomic_load_explicit(&r->gating[c].seq, memory_order_acquire));
    return (PyObject *)x;
}

static PyObject *Egress_run(EgressObject *x, PyObject *Py_UNUSED(ignored)) {
    if (x->e.running) {
        PyErr_SetString(PyExc_RuntimeError, "Egress.run: already running");
        return NULL;
    }
    if (ring_check(x->ring) < 0) return NULL;
    x->e.running = 1;
    Py_INCREF(x);
    x->ring->busy++;
    /* a reader that closes a pipe must end the loop with EPIPE, not kill the process with SIGPIPE:
     * block it in this thread while writing, and take back one that our write raised */
    sigset_t pipe_set, old_mask, pending_before;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigemptyset(&pending_before);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
    sigpending(&pending_before);
    PyThreadState *ts = PyEval_SaveThread();
    int rc = egress_loop(x, &ts);
    if (rc == EDGE_FAIL && x->e.err_errno == EPIPE && !sigismember(&pending_before, SIGPIPE)) {
        sigset_t now;
        sigpending(&now);
        if (sigismember(&now, SIGPIPE)) {
            struct timespec zero = {0, 0};
            sigtimedwait(&pipe_set, NULL, &zero);
        }
    }
    PyEval_RestoreThread(ts);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    x->ring->busy--;
    if (x->ring->closed) ring_unmap(x->ring);
    x->e.running = 0;
    PyObject *result = NULL;
    if (rc == EDGE_FAIL)
        edge_raise(&x->e);
    else if (rc != EDGE_PYERR)
        result = PyLong_FromLongLong(x->messages);
    Py_DECREF(x);
    return result;
}

static PyObject *Egress_stop(EgressObject *x, PyObject *Py_UNUSED(ignored)) {
    edge_stop(&x->e);
    Py_RETURN_NONE;
}

static PyObject *Egress_get_messages(EgressObject *x, void *c) { return PyLong_FromLongLong(x->messages); }
static PyObject *Egress_get_dropped(EgressObject *x, void *c) { return PyLong_FromLongLong(x->dropped); }
static PyObject *Egress_get_bytes(EgressObject *x, void *c) { return PyLong_FromLongLong(x->bytes_written); }
static PyObject *Egress_get_last_seq(EgressObject *x, void *c) {
    return PyLong_FromLongLong(atomic_load_explicit(&x->last_seq, memory_order_acquire));
}

static PyMethodDef Egress_methods[] = {
    {"run", (PyCFunction)Egress_run, METH_NOARGS,
     "run() -> messages written: until the ring is stopped and drained, or stop()"},
    {"stop", (PyCFunction)Egress_stop, METH_NOARGS, "stop(): write what is encoded and end run() (any thread)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Egress_getset[] = {
    {"messages", (getter)Egress_get_messages, NULL, "messages encoded (written once last_seq passes them)", NULL},
    {"dropped", (getter)Egress_get_dropped, NULL, "dropped messages skipped", NULL},
    {"bytes_written", (getter)Egress_get_bytes, NULL, "bytes written to the descriptor", NULL},
    {"last_seq", (getter)Egress_get_last_seq, NULL, "last sequence written out (and released)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EgressType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "byteor._native.Egress",
    .tp_basicsize = sizeof(EgressObject),
    .tp_dealloc = (destructor)Egress_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Egress(fd, framing, ring, c, *, wait=WAIT_BACKOFF, label='--output-file', "
              "flush_interval_ns=200_000_000, buffer_bytes=1<<20): framed output of cell c into fd",
    .tp_methods = Egress_methods,
    .tp_getset = Egress_getset,
    .tp_new = Egress_new,
};

/* ============================================================================
 * LaneGraph roles: bridge, router, merge and stage roles as native loops over lane rings
 * ============================================================================
 *
 * run_role() moves messages from its input lane rings (one consumer cell each) to its output lanes
 * (rings, or journal writers appended through journal.c) with no Python per message; Python runs
 * only for a Python stage's function (called as in run_stage, the GIL taken per batch). Kinds:
 * bridge (one in, one out, unchanged), router (one in, N out; round robin or CRC-32 of a
 * bytes:off:len window modulo N, as byteor.runtime.lanegraph._roles.Router), merge (N in, one out;
 * fair: one message from each non-empty input in turn, each input's order kept), stage (one in, one
 * out; the builtin identity / add_u8, or a Python function). on_full per output: block (wait;
 * every 100 ms beat and give up if the parent is gone), drop_newest (drop and count), fail (raise).
 *
 * Exactly once across a SIGKILL. Messages move in batches: the output slots of a batch are
 * written, then a batch record (the input ranges consumed, the output ranges written, the round
 * robin position) goes into the role's stats file with its checksum last, then the output cursors
 * are stored, then the inputs released. A role restarted after a crash reads the record: a torn
 * record (checksum mismatch) describes a batch that was never published (its inputs are still
 * unreleased and are processed again); a whole record whose inputs are not released describes a
 * batch whose slots are all written, so its publication is completed (a cursor store is
 * idempotent) and its inputs released, and nothing is published twice. A journal append is the
 * last message of its batch (reserve + copy, record, commit): if the crash came before the commit
 * the writer drops the reservation on reopen, and that one message is processed again. An mpsc
 * output (whose claims interleave with other producers') is also one message per batch.
 *
 * Fault injection for the crash tests: BYTEOR_FAULT_ROLE_KILL=<record|publish>:<n> makes the
 * process SIGKILL itself right after the n-th batch record is stored (record) or right after that
 * batch's outputs are published, before its inputs are released (publish): the two windows a random
 * kill hits too rarely to test. Read once per run_role call; unset, it costs one comparison a batch.
 *
 * Stats file (64-bit little-endian words; runtime/lanegraph/_stats.py): [0] messages in, [1]
 * heartbeat (CLOCK_MONOTONIC ns), [3] dropped by the stage, [4+j] written to output j, [12+j]
 * dropped on output j (on_full), [32..]
 * the batch record: check, generation, round robin, last input, journal output + 1, 8 input
 * ranges (first, last), 8 output ranges (first, last).
 */

#define ROLE_BRIDGE 0
#define ROLE_ROUTER 1
#define ROLE_MERGE 2
#define ROLE_STAGE 3

#define ON_FULL_BLOCK 0
#define ON_FULL_DROP_NEWEST 1
#define ON_FULL_FAIL 2

#define ROLE_PORTS 8
#define ROLE_MAX_BATCH 4096
#define ROLE_BEAT_NS 100000000LL

#define ST_IN 0
#define ST_BEAT 1
#define ST_FILTERED 3 /* messages a stage dropped on purpose */
#define ST_WRITTEN 4
#define ST_DROPS 12
#define ST_REC 32
#define ST_BYTES 1024 /* 128 words */

#define REC_CHECK 0
#define REC_GEN 1
#define REC_RR 2
#define REC_LAST_IN 3
#define REC_JOURNAL 4
#define REC_RINGS 5 /* which rings the record is about (their creation times): another run's is ignored */
#define REC_IN 6
#define REC_OUT (REC_IN + 2 * ROLE_PORTS)
#define REC_WORDS (REC_OUT + 2 * ROLE_PORTS)
_Static_assert(ST_REC + REC_WORDS <= ST_BYTES / 8, "the batch record fits the stats file");

#define ROLE_ERR_FULL 1
#define ROLE_ERR_OVERSIZE 2
#define ROLE_ERR_ABORT 3
#define ROLE_ERR_PY 4   /* a Python exception is set */
#define ROLE_ERR_STAGE 5 /* the stage function failed: a Python exception is set; failed_seq */

#define EMIT_OK 0
#define EMIT_FLUSH 1 /* written; the batch must end with this message */
#define EMIT_DROP 2  /* drop_newest */
#define EMIT_FAIL -1

typedef struct {
    RingObject *ring;
    int cell;
    int64_t next;       /* next sequence to consume */
    int done;           /* stopped and drained */
    int64_t first, last; /* this batch's consumed range (-1: none) */
} role_in_t;

typedef struct {
    RingObject *ring;   /* a ring output, or NULL for a journal writer */
    PyObject *writer;   /* journal outputs: the JournalWriter */
    PyObject *seg;      /* its current JournalSegment */
    int64_t jnext;      /* index of the next journal record */
    long long jcount;   /* records appended since the writer was last told */
    Py_ssize_t jat;     /* this batch's reserved record offset (-1: none) */
    int on_full;
    uint32_t slot_bytes;
    PyObject *name;
    int64_t first, last; /* this batch's output range (-1: none); journal: the record index */
    long long written, drops;
} role_out_t;

typedef struct {
    int kind, nin, nout;
    role_in_t in[ROLE_PORTS];
    role_out_t out[ROLE_PORTS];
    int route;
    uint32_t key_off, key_len;
    uint64_t rr;
    int op;
    uint8_t delta;
    int has_fn;
    int side_effect; /* flush after every message: a crash repeats at most one side effect */
    stagecall_t sc;
    PyObject *scratch_obj; /* a bytearray: the stage's scratch (and the INPLACE view's owner) */
    unsigned char *scratch;
    _Atomic uint64_t *st;
    int wait;
    long parent;
    long long messages_in;
    long long filtered;
    int publishes; /* the batch wrote to an output */
    int batch_msgs;
    int last_in;
    uint64_t gen;
    uint64_t rings_id;
    int64_t next_signals;
    PyThreadState *ts; /* saved while the GIL is released */
    int gil;
    int err, err_out;
    long long err_n;
    int64_t failed_seq;
    pacer_t pacer;    /* a Python stage: beat and publish what is done during long batches */
    int fault_phase;  /* BYTEOR_FAULT_ROLE_KILL: 1 after the record, 2 after publishing, 3 after a
                       * multi-producer claim (before the slot is written); 0 off */
    long long fault_at, fault_batches, fault_claims;
} role_t;

static void role_fault(role_t *R, int phase) {
    if (R->fault_phase == phase && R->fault_batches == R->fault_at) raise(SIGKILL);
}

static inline void role_release_gil(role_t *R) {
    if (R->gil) {
        R->ts = PyEval_SaveThread();
        R->gil = 0;
    }
}

static inline void role_take_gil(role_t *R) {
    if (!R->gil) {
        PyEval_RestoreThread(R->ts);
        R->gil = 1;
    }
}

static inline void st_put(role_t *R, int word, uint64_t v) {
    atomic_store_explicit(&R->st[word], v, memory_order_relaxed);
}

static void role_beat(role_t *R, int64_t now) {
    atomic_store_explicit(&R->st[ST_BEAT], (uint64_t)now, memory_order_relaxed);
}

static void role_counters(role_t *R) {
    st_put(R, ST_IN, (uint64_t)R->messages_in);
    st_put(R, ST_FILTERED, (uint64_t)R->filtered);
    for (int j = 0; j < R->nout; j++) {
        st_put(R, ST_WRITTEN + j, (uint64_t)R->out[j].written);
        st_put(R, ST_DROPS + j, (uint64_t)R->out[j].drops);
    }
}

static uint64_t rec_mix(const uint64_t *w) {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (int i = REC_GEN; i < REC_WORDS; i++) {
        h ^= w[i];
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    return h | 1; /* a zeroed (fresh) file never checks */
}

/* The batch record: every field, then the checksum (release: stored after the fields). */
static void role_record(role_t *R) {
    uint64_t w[REC_WORDS];
    memset(w, 0, sizeof w);
    w[REC_GEN] = ++R->gen;
    w[REC_RR] = R->rr;
    w[REC_LAST_IN] = (uint64_t)R->last_in;
    w[REC_RINGS] = R->rings_id;
    for (int k = 0; k < ROLE_PORTS; k++) {
        w[REC_IN + 2 * k] = (uint64_t)(k < R->nin ? R->in[k].first : -1);
        w[REC_IN + 2 * k + 1] = (uint64_t)(k < R->nin ? R->in[k].last : -1);
    }
    for (int j = 0; j < ROLE_PORTS; j++) {
        w[REC_OUT + 2 * j] = (uint64_t)(j < R->nout ? R->out[j].first : -1);
        w[REC_OUT + 2 * j + 1] = (uint64_t)(j < R->nout ? R->out[j].last : -1);
        if (j < R->nout && R->out[j].ring == NULL && R->out[j].jat >= 0) w[REC_JOURNAL] = (uint64_t)j + 1;
    }
    for (int i = REC_GEN; i < REC_WORDS; i++)
        atomic_store_explicit(&R->st[ST_REC + i], w[i], memory_order_release);
    atomic_store_explicit(&R->st[ST_REC + REC_CHECK], rec_mix(w), memory_order_release);
}

/* End the batch: record, publish every output range, commit the journal append, release inputs. */
static void role_flush(role_t *R) {
    int consumed = 0;
    for (int k = 0; k < R->nin; k++) consumed |= R->in[k].last >= 0;
    if (!consumed && !R->publishes) return;
    int recorded = R->publishes;
    if (recorded) {
        role_record(R);
        R->fault_batches++;
        role_fault(R, 1);
    }
    for (int j = 0; j < R->nout; j++) {
        role_out_t *o = &R->out[j];
        if (o->first < 0) continue;
        if (o->ring == NULL) {
            byteor_journal_commit_at(o->seg, o->jat);
            o->jat = -1;
        } else if (o->ring->flags & FLAG_MULTI_PRODUCER) {
            producer_publish(o->ring, o->first, o->last);
        } else {
            cell_store_wake(o->ring->published, o->last);
        }
        o->first = o->last = -1;
    }
    if (recorded) role_fault(R, 2);
    for (int k = 0; k < R->nin; k++) {
        role_in_t *in = &R->in[k];
        if (in->last >= 0) cell_store_wake(&in->ring->gating[in->cell], in->last);
        in->first = in->last = -1;
    }
    R->publishes = 0;
    R->batch_msgs = 0;
    role_counters(R);
    role_beat(R, mono_ns());
}

/* Complete the batch a crashed run left half published (see the section comment). */
static void role_recover(role_t *R) {
    uint64_t w[REC_WORDS];
    for (int i = 0; i < REC_WORDS; i++) w[i] = atomic_load_explicit(&R->st[ST_REC + i], memory_order_acquire);
    if (w[REC_CHECK] != rec_mix(w)) return; /* nothing recorded, or a torn record: nothing was published */
    if (w[REC_RINGS] != R->rings_id) return; /* recorded over other lanes (an earlier run's file) */
    R->gen = w[REC_GEN];
    R->rr = w[REC_RR];
    int pending = 0;
    for (int k = 0; k < R->nin; k++) {
        int64_t last = (int64_t)w[REC_IN + 2 * k + 1];
        pending |= last >= 0 && last > atomic_load_explicit(&R->in[k].ring->gating[R->in[k].cell].seq,
                                                            memory_order_acquire);
    }
    if (!pending) return;
    int uncommitted = 0;
    for (int j = 0; j < R->nout; j++) {
        role_out_t *o = &R->out[j];
        int64_t first = (int64_t)w[REC_OUT + 2 * j], last = (int64_t)w[REC_OUT + 2 * j + 1];
        if (first < 0) continue;
        if (o->ring == NULL) {
            if (o->jnext <= first) uncommitted = 1; /* the reopened writer dropped the reservation */
        } else if (o->ring->flags & FLAG_MULTI_PRODUCER) {
            producer_publish(o->ring, first, last);
        } else {
            if (o->ring->next_seq <= last) o->ring->next_seq = last + 1;
            if (atomic_load_explicit(&o->ring->published->seq, memory_order_acquire) < last)
                cell_store_wake(o->ring->published, last);
        }
    }
    int last_in = (int)w[REC_LAST_IN];
    for (int k = 0; k < R->nin; k++) {
        role_in_t *in = &R->in[k];
        int64_t target = (int64_t)w[REC_IN + 2 * k + 1];
        if (uncommitted && k == last_in) target--; /* the journal's message is processed again */
        if (target > atomic_load_explicit(&in->ring->gating[in->cell].seq, memory_order_acquire))
            cell_store_wake(&in->ring->gating[in->cell], target);
    }
    if (uncommitted && R->kind == ROLE_ROUTER && R->route == ROUTE_ROUND_ROBIN) R->rr--;
}

/* Roll a journal output over to a new segment (Python, GIL taken for the moment). */
static int role_journal_roll(role_t *R, role_out_t *o) {
    int had = R->gil;
    role_take_gil(R);
    PyObject *seg = PyObject_CallMethod(o->writer, "native_rolled", "L", o->jcount);
    int ok = seg != NULL && byteor_journal_segment_check(seg);
    if (seg != NULL && !ok)
        PyErr_Format(PyExc_TypeError, "journal writer of lane %R did not hand a native segment", o->name);
    if (ok) {
        Py_SETREF(o->seg, seg);
        o->jcount = 0;
    } else {
        Py_XDECREF(seg);
    }
    if (!had) role_release_gil(R);
    return ok ? 0 : -1;
}

/* Wait for room in ring output j (GIL released): slices of 100 ms, each ends with a heartbeat and
 * a look at the parent. 0 when there is room, EMIT_FAIL (R->err set) otherwise. */
static int role_wait_room(role_t *R, int j, int64_t need) {
    role_out_t *o = &R->out[j];
    RingObject *r = o->ring;
    int had = R->gil;
    role_release_gil(R);
    int rc = 0;
    for (;;) {
        waiter_t w;
        waiter_init(&w, R->wait, ROLE_BEAT_NS, R->ts);
        int s = ring_wait_room(r, need, &w);
        R->ts = w.ts;
        if (s == STEP_OK) break;
        if (s == STEP_ERROR) {
            R->err = ROLE_ERR_PY;
            rc = EMIT_FAIL;
            break;
        }
        role_counters(R);
        role_beat(R, mono_ns());
        if (R->parent > 0 && getppid() != R->parent) {
            R->err = ROLE_ERR_ABORT;
            R->err_out = j;
            rc = EMIT_FAIL;
            break;
        }
    }
    if (had) role_take_gil(R);
    return rc;
}

/* Write one message into output j under its on_full policy. */
static int role_emit(role_t *R, int j, const unsigned char *p, uint32_t n) {
    role_out_t *o = &R->out[j];
    if (n > o->slot_bytes) {
        R->err = ROLE_ERR_OVERSIZE;
        R->err_out = j;
        R->err_n = n;
        return EMIT_FAIL;
    }
    if (o->ring == NULL) {
        Py_ssize_t at = byteor_journal_reserve_copy(o->seg, p, n);
        if (at < 0) {
            if (role_journal_roll(R, o) < 0) {
                R->err = ROLE_ERR_PY;
                return EMIT_FAIL;
            }
            at = byteor_journal_reserve_copy(o->seg, p, n);
            if (at < 0) { /* a fresh segment holds one record of slot_bytes (the writer checks) */
                R->err = ROLE_ERR_OVERSIZE;
                R->err_out = j;
                R->err_n = n;
                return EMIT_FAIL;
            }
        }
        o->jat = at;
        o->first = o->last = o->jnext++;
        o->jcount++;
        o->written++;
        R->publishes = 1;
        return EMIT_FLUSH;
    }
    RingObject *r = o->ring;
    int mp = (r->flags & FLAG_MULTI_PRODUCER) != 0;
    int64_t seq;
    for (;;) {
        int64_t cur = mp ? atomic_load_explicit(&r->claim->seq, memory_order_acquire) + 1 : r->next_seq;
        int64_t need = cur - r->capacity;
        if (need > r->gating_cache) r->gating_cache = min_gating(r);
        if (need <= r->gating_cache) {
            if (!mp) {
                seq = cur;
                r->next_seq = cur + 1;
                break;
            }
            int64_t expect = cur - 1;
            claim_record_try(r, r->prod_slot, cur, cur);
            if (atomic_compare_exchange_weak_explicit(&r->claim->seq, &expect, cur, memory_order_acq_rel,
                                                      memory_order_relaxed)) {
                claim_taken(r, cur, cur);
                seq = cur;
                if (R->fault_phase == 3 && ++R->fault_claims == R->fault_at) raise(SIGKILL);
                break;
            }
            continue;
        }
        if (R->publishes || R->batch_msgs) { /* our own unpublished slots may be what fills it */
            role_flush(R);
            continue;
        }
        if (mp) claim_record_idle(r, r->prod_slot); /* not claiming while it drops, fails or waits */
        if (o->on_full == ON_FULL_DROP_NEWEST) {
            o->drops++;
            return EMIT_DROP;
        }
        if (o->on_full == ON_FULL_FAIL) {
            R->err = ROLE_ERR_FULL;
            R->err_out = j;
            return EMIT_FAIL;
        }
        if (role_wait_room(R, j, need) < 0) return EMIT_FAIL;
    }
    unsigned char *slot = slot_at(r, seq);
    atomic_store_explicit(slot_len(slot), n, memory_order_relaxed);
    memcpy(slot_payload(r, slot), p, n);
    if (o->first < 0) o->first = seq;
    o->last = seq;
    o->written++;
    R->publishes = 1;
    return mp ? EMIT_FLUSH : EMIT_OK;
}

/* Process message s of input k. 0, or EMIT_FAIL with R->err set (s is not consumed). */
static int role_message(role_t *R, int k, int64_t s) {
    role_in_t *in = &R->in[k];
    RingObject *ir = in->ring;
    unsigned char *slot = slot_at(ir, s);
    uint32_t n = atomic_load_explicit(slot_len(slot), memory_order_relaxed);
    int flush = 0;
    if (n != DROPPED_LENGTH) {
        if (n > ir->slot_bytes) n = ir->slot_bytes;
        const unsigned char *p = slot_payload(ir, slot);
        int skip = 0;
        if (R->op == OP_ADD_U8) {
            for (uint32_t i = 0; i < n; i++) R->scratch[i] = (unsigned char)(p[i] + R->delta);
            p = R->scratch;
        } else if (R->has_fn) {
            uint32_t out_len = 0;
            int oc = stagecall_run(&R->sc, (unsigned char *)p, n, &out_len);
            if (oc == CALL_ERROR) {
                R->err = ROLE_ERR_STAGE;
                R->failed_seq = s;
                return EMIT_FAIL;
            }
            if (oc == CALL_DROP) {
                skip = 1;
                R->filtered++;
            }
            if (oc == CALL_NEW) {
                p = R->scratch;
                n = out_len;
            }
        }
        if (!skip) {
            int j = 0;
            if (R->kind == ROLE_ROUTER) {
                if (R->route == ROUTE_KEY) {
                    uint32_t off = R->key_off < n ? R->key_off : n;
                    uint32_t len = R->key_len < n - off ? R->key_len : n - off;
                    j = (int)(byteor_crc32(0, p + off, len) % (uint32_t)R->nout);
                } else {
                    j = (int)(R->rr % (uint64_t)R->nout);
                }
            }
            int rc = role_emit(R, j, p, n);
            if (rc == EMIT_FAIL) return EMIT_FAIL;
            flush = rc == EMIT_FLUSH;
            if (R->kind == ROLE_ROUTER && R->route == ROUTE_ROUND_ROBIN) R->rr++;
        }
        R->messages_in++;
    }
    if (in->first < 0) in->first = s;
    in->last = s;
    in->next = s + 1;
    R->last_in = k;
    R->batch_msgs++;
    if (flush || R->side_effect || R->batch_msgs >= ROLE_MAX_BATCH) role_flush(R);
    return 0;
}

static int role_input_done(role_in_t *in) {
    RingObject *r = in->ring;
    if (!stop_set(r) || atomic_load_explicit(&r->published->seq, memory_order_acquire) >= in->next) return 0;
    if ((r->flags & FLAG_MULTI_PRODUCER) && atomic_load_explicit(&r->claim->seq, memory_order_acquire) >= in->next) {
        consumer_repair_tick(r, 1); /* a dead writer's hole must not hide what follows it */
        return atomic_load_explicit(&r->published->seq, memory_order_acquire) < in->next;
    }
    return 1;
}

/* Wait (GIL released) until some input has a message. 0, 1 when every input is done, -1 (signal). */
static int role_wait_inputs(role_t *R) {
    int had = R->gil;
    role_release_gil(R);
    int rc = 0;
    int strategy = R->nin > 1 && R->wait == WAIT_BLOCK ? WAIT_BACKOFF : R->wait; /* no one futex for N cells */
    for (;;) {
        waiter_t w;
        waiter_init(&w, strategy, ROLE_BEAT_NS, R->ts);
        int got = 0, all_done = 1;
        for (;;) {
            seq_line_t *lag = NULL;
            int64_t seen = 0;
            got = 0;
            all_done = 1;
            for (int k = 0; k < R->nin; k++) {
                role_in_t *in = &R->in[k];
                if (in->done) continue;
                seq_line_t *cell;
                int64_t s;
                if (barrier_of(in->ring, in->cell, in->next, &cell, &s) >= in->next) {
                    got = 1;
                    all_done = 0;
                    break;
                }
                if (role_input_done(in)) {
                    in->done = 1;
                    continue;
                }
                if ((in->ring->flags & FLAG_MULTI_PRODUCER) && cell == in->ring->published && repair_step(&w))
                    consumer_repair_tick(in->ring, 0);
                all_done = 0;
                if (lag == NULL) {
                    lag = cell;
                    seen = s;
                    w.participants = in->ring->n_consumers + 1;
                }
            }
            if (got || all_done) break;
            int st = waiter_step(&w, R->nin == 1 ? lag : NULL, seen);
            if (st == STEP_TIMEOUT) break;
            if (st != STEP_OK) {
                R->ts = w.ts;
                R->err = ROLE_ERR_PY;
                rc = -1;
                goto out;
            }
        }
        R->ts = w.ts;
        if (got) break;
        if (all_done) {
            rc = 1;
            break;
        }
        role_counters(R);
        role_beat(R, mono_ns()); /* idle is not hung */
    }
out:
    if (had) role_take_gil(R);
    return rc;
}

static int role_run(role_t *R) {
    int turn = 0;
    for (;;) {
        int64_t avail[ROLE_PORTS];
        int any = 0;
        for (int k = 0; k < R->nin; k++) {
            role_in_t *in = &R->in[k];
            seq_line_t *cell;
            int64_t seen;
            avail[k] = in->done ? -1 : barrier_of(in->ring, in->cell, in->next, &cell, &seen);
            any |= avail[k] >= in->next;
        }
        if (!any) {
            int rc = role_wait_inputs(R);
            if (rc == 1) return 0;
            if (rc < 0) return EMIT_FAIL;
            continue;
        }
        if (R->has_fn) role_take_gil(R);
        /* one message from each input that has one, in turn, until this round's messages are done */
        int left = 1;
        while (left) {
            left = 0;
            for (int i = 0; i < R->nin; i++) {
                int k = turn;
                turn = (turn + 1) % R->nin;
                role_in_t *in = &R->in[k];
                if (in->done || in->next > avail[k]) continue;
                if (role_message(R, k, in->next) < 0) {
                    role_flush(R);
                    return EMIT_FAIL;
                }
                left |= in->next <= avail[k];
                if (R->has_fn) {
                    int tick = pacer_tick(&R->pacer);
                    if (tick == TICK_RELEASE) role_flush(R); /* a slow function: publish what is done */
                    else if (tick == TICK) role_beat(R, R->pacer.last_tick);
                }
            }
        }
        role_flush(R);
        if (R->has_fn) pacer_released(&R->pacer);
        int64_t now = mono_ns();
        if (now >= R->next_signals) {
            R->next_signals = now + SIGNAL_CHECK_NS;
            int had = R->gil;
            role_take_gil(R);
            int bad = PyErr_CheckSignals() < 0;
            if (!had && !R->has_fn) role_release_gil(R);
            if (bad) {
                R->err = ROLE_ERR_PY;
                return EMIT_FAIL;
            }
        }
        if (R->has_fn) role_release_gil(R);
    }
}

static int parse_choice(PyObject *o, const char *what, const char *const *names, int n) {
    const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL;
    if (s != NULL)
        for (int i = 0; i < n; i++)
            if (strcmp(s, names[i]) == 0) return i;
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError, "run_role: unknown %s %R", what, o);
    return -1;
}

static void role_clear(role_t *R) {
    for (int k = 0; k < R->nin; k++) Py_CLEAR(R->in[k].ring);
    for (int j = 0; j < R->nout; j++) {
        Py_CLEAR(R->out[j].ring);
        Py_CLEAR(R->out[j].writer);
        Py_CLEAR(R->out[j].seg);
        Py_CLEAR(R->out[j].name);
    }
    stagecall_clear(&R->sc);
    Py_CLEAR(R->scratch_obj);
}

static PyObject *native_run_role(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"kind", "inputs", "outputs", "stats", "route", "key_offset", "key_len", "op", "delta",
                             "fn", "form", "side_effect", "wait", "parent_pid", "error", "contract_error",
                             "participant_role", NULL};
    static const char *const KINDS[] = {"bridge", "router", "merge", "stage"};
    static const char *const FULLS[] = {"block", "drop_newest", "fail"};
    static const char *const ROUTES[] = {"single", "round_robin", "key"};
    static const char *const OPS[] = {"identity", "add_u8"};
    PyObject *kind_obj, *inputs, *outputs, *route_obj = NULL, *op_obj = Py_None, *fn = Py_None;
    PyObject *error_type = PyExc_RuntimeError, *contract = Py_None;
    Py_buffer stats;
    long long key_off = 0, key_len = 0;
    int delta = 0, form = FORM_INPLACE, wait = WAIT_BACKOFF, side_effect = 0;
    long parent = 0, part_role = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOw*|$OLLOiOipilOOl", kwlist, &kind_obj, &inputs, &outputs, &stats,
                                     &route_obj, &key_off, &key_len, &op_obj, &delta, &fn, &form, &side_effect, &wait,
                                     &parent, &error_type, &contract, &part_role))
        return NULL;
    role_t *R = PyMem_Calloc(1, sizeof(role_t));
    PyObject *result = NULL, *in_seq = NULL, *out_seq = NULL;
    if (R == NULL) {
        PyBuffer_Release(&stats);
        return PyErr_NoMemory();
    }
    int kind = parse_choice(kind_obj, "kind", KINDS, 4);
    if (kind < 0 || check_wait(wait) < 0 || check_form(form) < 0) goto done;
    R->kind = kind;
    R->wait = wait;
    R->parent = parent;
    R->op = -1;
    R->route = ROUTE_SINGLE;
    if (stats.len < ST_BYTES || ((uintptr_t)stats.buf & 7u)) {
        PyErr_Format(PyExc_ValueError, "run_role: stats must be an 8-aligned writable buffer of >= %d bytes",
                     ST_BYTES);
        goto done;
    }
    R->st = (_Atomic uint64_t *)stats.buf;
    if (!PyExceptionClass_Check(error_type) || (contract != Py_None && !PyExceptionClass_Check(contract))) {
        PyErr_SetString(PyExc_TypeError, "run_role: error and contract_error must be exception classes");
        goto done;
    }
    if (route_obj != NULL && (R->route = parse_choice(route_obj, "route", ROUTES, 3)) < 0) goto done;
    if (op_obj != Py_None && (R->op = parse_choice(op_obj, "op", OPS, 2)) < 0) goto done;
    if (key_off < 0 || key_off > UINT32_MAX || key_len < 0 || key_len > UINT32_MAX || delta < 0 || delta > 255) {
        PyErr_SetString(PyExc_ValueError, "run_role: key_offset/key_len outside 0..2**32-1 or delta outside 0..255");
        goto done;
    }
    if (part_role < -1 || part_role > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "run_role: participant_role %ld outside 0..2**31-1", part_role);
        goto done;
    }
    R->key_off = (uint32_t)key_off;
    R->key_len = (uint32_t)key_len;
    R->delta = (uint8_t)delta;
    R->has_fn = fn != Py_None;
    R->side_effect = side_effect;
    if (R->has_fn && !PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "run_role: fn must be callable");
        goto done;
    }
    in_seq = PySequence_Fast(inputs, "run_role: inputs must be a sequence of (Ring, cell)");
    out_seq = in_seq ? PySequence_Fast(outputs, "run_role: outputs must be a sequence of (target, on_full, name)")
                     : NULL;
    if (out_seq == NULL) goto done;
    Py_ssize_t nin = PySequence_Fast_GET_SIZE(in_seq), nout = PySequence_Fast_GET_SIZE(out_seq);
    int want_in_many = kind == ROLE_MERGE, want_out_many = kind == ROLE_ROUTER;
    if (nin < 1 || nin > ROLE_PORTS || nout < 1 || nout > ROLE_PORTS || (!want_in_many && nin != 1) ||
        (!want_out_many && nout != 1)) {
        PyErr_Format(PyExc_ValueError, "run_role: a %s role takes %s input(s) and %s output(s) (at most %d), got %zd "
                     "and %zd", KINDS[kind], want_in_many ? "1.." : "1", want_out_many ? "1.." : "1", ROLE_PORTS, nin,
                     nout);
        goto done;
    }
    if ((R->op >= 0 || R->has_fn) && kind != ROLE_STAGE) {
        PyErr_SetString(PyExc_ValueError, "run_role: op and fn belong to stage roles");
        goto done;
    }
    if (kind == ROLE_ROUTER && R->route == ROUTE_SINGLE) R->route = ROUTE_ROUND_ROBIN;
    uint32_t widest = 0;
    for (Py_ssize_t k = 0; k < nin; k++) {
        PyObject *t = PySequence_Fast_GET_ITEM(in_seq, k);
        PyObject *ring;
        int cell;
        if (!PyTuple_Check(t) || !PyArg_ParseTuple(t, "O!i", &RingType, &ring, &cell)) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "run_role: inputs[%zd] must be (Ring, cell)", k);
            }
            goto done;
        }
        if (ring_check((RingObject *)ring) < 0 || check_consumer((RingObject *)ring, cell) < 0) goto done;
        Py_INCREF(ring);
        R->in[k].ring = (RingObject *)ring;
        R->nin = (int)k + 1;
        R->in[k].cell = cell;
        R->in[k].first = R->in[k].last = -1;
        if (((RingObject *)ring)->slot_bytes > widest) widest = ((RingObject *)ring)->slot_bytes;
    }
    for (Py_ssize_t j = 0; j < nout; j++) {
        PyObject *t = PySequence_Fast_GET_ITEM(out_seq, j);
        PyObject *target, *full, *name;
        if (!PyTuple_Check(t) || !PyArg_ParseTuple(t, "OOU", &target, &full, &name)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "run_role: outputs[%zd] must be (Ring or JournalWriter, on_full, name)", j);
            goto done;
        }
        role_out_t *o = &R->out[j];
        R->nout = (int)j + 1;
        o->first = o->last = -1;
        o->jat = -1;
        Py_INCREF(name);
        o->name = name;
        if ((o->on_full = parse_choice(full, "on_full", FULLS, 3)) < 0) goto done;
        if (Py_IS_TYPE(target, &RingType)) {
            if (ring_check((RingObject *)target) < 0) goto done;
            Py_INCREF(target);
            o->ring = (RingObject *)target;
            o->slot_bytes = o->ring->slot_bytes;
        } else {
            PyObject *seg = PyObject_CallMethod(target, "native_segment", NULL);
            if (seg == NULL) goto done;
            if (!byteor_journal_segment_check(seg)) {
                Py_DECREF(seg);
                PyErr_Format(PyExc_TypeError, "run_role: output %R has no native journal segment", name);
                goto done;
            }
            o->seg = seg;
            Py_INCREF(target);
            o->writer = target;
            PyObject *v = PyObject_GetAttrString(target, "next_index");
            long long nx = v != NULL ? PyLong_AsLongLong(v) : -1;
            Py_XDECREF(v);
            PyObject *sb = nx >= 0 ? PyObject_GetAttrString(target, "slot_bytes") : NULL;
            long long slot = sb != NULL ? PyLong_AsLongLong(sb) : -1;
            Py_XDECREF(sb);
            if (nx < 0 || slot < 1 || slot > UINT32_MAX) {
                if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "run_role: journal output %R is unusable", name);
                goto done;
            }
            o->jnext = nx;
            o->slot_bytes = (uint32_t)slot;
        }
        if (o->slot_bytes > widest) widest = o->slot_bytes;
        o->written = (long long)atomic_load_explicit(&R->st[ST_WRITTEN + j], memory_order_relaxed);
        o->drops = (long long)atomic_load_explicit(&R->st[ST_DROPS + j], memory_order_relaxed);
    }
    R->messages_in = (long long)atomic_load_explicit(&R->st[ST_IN], memory_order_relaxed);
    R->filtered = (long long)atomic_load_explicit(&R->st[ST_FILTERED], memory_order_relaxed);
    if (kind == ROLE_STAGE && (R->op == OP_ADD_U8 || R->has_fn)) {
        /* the stage's scratch: as large as the larger of its input and output slots */
        R->scratch_obj = PyByteArray_FromStringAndSize(NULL, widest);
        if (R->scratch_obj == NULL) goto done;
        R->scratch = (unsigned char *)PyByteArray_AS_STRING(R->scratch_obj);
        if (R->has_fn && stagecall_init(&R->sc, fn, form, widest, R->scratch,
                                        form == FORM_READONLY ? (PyObject *)R->in[0].ring : R->scratch_obj,
                                        slot_payload(R->in[0].ring, R->in[0].ring->slots)) < 0)
            goto done;
        R->sc.contract = contract != Py_None ? contract : NULL;
    }
    /* resume: complete a half-published batch, then go on from each input's gating cell */
    R->rings_id = 0x243F6A8885A308D3ull;
    for (int k = 0; k < R->nin; k++) {
        uint64_t created = ((ring_header_t *)(void *)R->in[k].ring->base)->created_ns;
        R->rings_id = (R->rings_id ^ created) * 0x100000001B3ull;
    }
    for (int j = 0; j < R->nout; j++)
        if (R->out[j].ring) {
            uint64_t created = ((ring_header_t *)(void *)R->out[j].ring->base)->created_ns;
            R->rings_id = (R->rings_id ^ created) * 0x100000001B3ull;
        }
    role_recover(R);
    /* multi-producer outputs: a claim record for every claim. A role with a participant_role repairs
     * its earlier runs' claims (after role_recover published what its batch record holds) and flags
     * its entry so that nobody else drops what its next restart will publish. */
    for (int j = 0; j < R->nout; j++) {
        RingObject *o = R->out[j].ring;
        if (o == NULL || !(o->flags & FLAG_MULTI_PRODUCER)) continue;
        if (part_role >= 0) {
            successor_repair(o, (uint32_t)part_role);
            producer_entry_release(o);
            int i = part_register(o, (uint32_t)part_role, (uint32_t)getpid(), PART_FLAG_SUCCESSOR);
            if (i < 0) {
                PyErr_Format(PyExc_RuntimeError, "participants table of lane %R full (%d live participants)",
                             R->out[j].name, MAX_PARTICIPANTS);
                goto done;
            }
            o->prod_slot = i;
            o->prod_gen = atomic_load_explicit(&g_fork_gen, memory_order_relaxed);
        } else if (producer_entry(o) < 0) {
            goto done;
        }
    }
    for (int k = 0; k < R->nin; k++)
        R->in[k].next = atomic_load_explicit(&R->in[k].ring->gating[R->in[k].cell].seq, memory_order_acquire) + 1;
    for (int k = 0; k < R->nin; k++) R->in[k].ring->busy++;
    for (int j = 0; j < R->nout; j++)
        if (R->out[j].ring) R->out[j].ring->busy++;
    Py_INCREF(fn);
    R->next_signals = mono_ns() + SIGNAL_CHECK_NS;
    const char *fault = getenv("BYTEOR_FAULT_ROLE_KILL");
    if (fault != NULL) {
        if (strncmp(fault, "record:", 7) == 0) R->fault_phase = 1;
        else if (strncmp(fault, "publish:", 8) == 0) R->fault_phase = 2;
        else if (strncmp(fault, "claim:", 6) == 0) R->fault_phase = 3;
        if (R->fault_phase) R->fault_at = atoll(strchr(fault, ':') + 1);
    }
    role_beat(R, mono_ns());
    pacer_init(&R->pacer);
    R->gil = 1;
    role_release_gil(R);
    int rc = role_run(R);
    role_take_gil(R);
    role_counters(R);
    for (int j = 0; j < R->nout; j++) { /* tell the journal writers what was appended */
        role_out_t *o = &R->out[j];
        if (o->writer != NULL && o->jcount > 0) {
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyObject *ok = PyObject_CallMethod(o->writer, "native_appended", "L", o->jcount);
            if (ok == NULL) PyErr_WriteUnraisable(o->writer);
            Py_XDECREF(ok);
            PyErr_Restore(t, v, tb);
            o->jcount = 0;
        }
    }
    for (int k = 0; k < R->nin; k++) {
        R->in[k].ring->busy--;
        if (R->in[k].ring->closed) ring_unmap(R->in[k].ring);
    }
    for (int j = 0; j < R->nout; j++)
        if (R->out[j].ring) {
            /* every batch was flushed before role_run returned: nothing of this run is left to repair */
            if (R->out[j].ring->flags & FLAG_MULTI_PRODUCER) producer_entry_release(R->out[j].ring);
            R->out[j].ring->busy--;
            if (R->out[j].ring->closed) ring_unmap(R->out[j].ring);
        }
    Py_DECREF(fn);
    if (rc == 0) {
        result = PyLong_FromLongLong(R->messages_in);
    } else {
        role_out_t *o = &R->out[R->err_out];
        switch (R->err) {
        case ROLE_ERR_FULL:
            PyErr_Format(error_type, "lane %R is full (on_full=fail): the pipeline stops", o->name);
            break;
        case ROLE_ERR_OVERSIZE:
            PyErr_Format(error_type, "message of %lld bytes exceeds lane %R slot_bytes=%u", R->err_n, o->name,
                         o->slot_bytes);
            break;
        case ROLE_ERR_ABORT:
            PyErr_Format(error_type, "lane %R: publishing was aborted while the lane was full", o->name);
            break;
        case ROLE_ERR_STAGE:
            set_failed_seq(R->failed_seq);
            break;
        default:
            break; /* ROLE_ERR_PY: the exception is set */
        }
    }
done:
    Py_XDECREF(in_seq);
    Py_XDECREF(out_seq);
    role_clear(R);
    PyMem_Free(R);
    PyBuffer_Release(&stats);
    return result;
}

/* ============================================================================
 * Stop, participants, snapshot
 * ============================================================================ */

static void wake_everyone(RingObject *r) {
    futex_wake_all((void *)&r->published->seq);
    futex_wake_all((void *)&r->claim->seq);
    for (uint32_t i = 0; i < r->n_consumers; i++) futex_wake_all((void *)&r->gating[i].seq);
}

static PyObject *Ring_request_stop(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    if (ring_check(r) < 0) return NULL;
    atomic_store_explicit(&r->stop->stop, 1u, memory_order_seq_cst);
    wake_everyone(r);
    Py_RETURN_NONE;
}

static PyObject *Ring_clear_stop(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    if (ring_check(r) < 0) return NULL;
    atomic_store_explicit(&r->stop->stop, 0u, memory_order_seq_cst);
    Py_RETURN_NONE;
}

static PyObject *Ring_stop_requested(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    if (ring_check(r) < 0) return NULL;
    return PyBool_FromLong(stop_set(r));
}

static PyObject *Ring_register_participant(RingObject *r, PyObject *const *args, Py_ssize_t nargs) {
    if (ring_check(r) < 0) return NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "register_participant(role, pid)");
        return NULL;
    }
    long role = PyLong_AsLong(args[0]);
    if (role == -1 && PyErr_Occurred()) return NULL;
    long pid = PyLong_AsLong(args[1]);
    if (pid == -1 && PyErr_Occurred()) return NULL;
    if (role < 0 || role > INT32_MAX || pid <= 0 || pid > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "register_participant: role %ld / pid %ld out of range", role, pid);
        return NULL;
    }
    int i = part_register(r, (uint32_t)role, (uint32_t)pid, 0);
    if (i >= 0) return PyLong_FromLong(i);
    PyErr_Format(PyExc_RuntimeError, "participants table full (%d live participants)", MAX_PARTICIPANTS);
    return NULL;
}

static PyObject *Ring_repair(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    if (ring_check(r) < 0) return NULL;
    return PyLong_FromLongLong(ring_repair(r));
}

static int parse_part_slot(PyObject *arg, long *slot) {
    *slot = PyLong_AsLong(arg);
    if (*slot == -1 && PyErr_Occurred()) return -1;
    if (*slot < 0 || *slot >= MAX_PARTICIPANTS) {
        PyErr_Format(PyExc_IndexError, "participant slot %ld out of range", *slot);
        return -1;
    }
    return 0;
}

static PyObject *Ring_heartbeat(RingObject *r, PyObject *arg) {
    long slot;
    if (ring_check(r) < 0 || parse_part_slot(arg, &slot) < 0) return NULL;
    heartbeat_store(r, (int)slot);
    Py_RETURN_NONE;
}

static PyObject *Ring_unregister_participant(RingObject *r, PyObject *const *args, Py_ssize_t nargs) {
    long slot;
    if (ring_check(r) < 0) return NULL;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "unregister_participant(slot, exited=False)");
        return NULL;
    }
    if (parse_part_slot(args[0], &slot) < 0) return NULL;
    int exited = nargs == 2 ? PyObject_IsTrue(args[1]) : 0;
    if (exited < 0) return NULL;
    atomic_store_explicit(&r->parts[slot].state, exited ? PART_EXITED : PART_FREE, memory_order_release);
    Py_RETURN_NONE;
}

static PyObject *participants_list(RingObject *r, int with_slot) {
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    for (int i = 0; i < MAX_PARTICIPANTS; i++) {
        participant_t *p = &r->parts[i];
        uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);
        if (st == PART_FREE) continue;
        PyObject *t;
        if (with_slot)
            t = Py_BuildValue("(iIILI)", i, atomic_load_explicit(&p->role, memory_order_relaxed),
                              atomic_load_explicit(&p->pid, memory_order_relaxed),
                              (long long)atomic_load_explicit(&p->heartbeat_ns, memory_order_relaxed), st);
        else
            t = Py_BuildValue("(IILI)", atomic_load_explicit(&p->role, memory_order_relaxed),
                              atomic_load_explicit(&p->pid, memory_order_relaxed),
                              (long long)atomic_load_explicit(&p->heartbeat_ns, memory_order_relaxed), st);
        if (t == NULL || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(t);
    }
    return list;
}

static PyObject *Ring_participants(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    if (ring_check(r) < 0) return NULL;
    return participants_list(r, 0);
}

static PyObject *Ring_participant_slots(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    if (ring_check(r) < 0) return NULL;
    return participants_list(r, 1);
}

static PyObject *Ring_snapshot(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    if (ring_check(r) < 0) return NULL;
    int64_t cursor = atomic_load_explicit(&r->published->seq, memory_order_acquire);
    int64_t claim = atomic_load_explicit(&r->claim->seq, memory_order_acquire);
    if (claim < cursor) claim = cursor; /* single producer: the claim cell only moves with claim() */
    PyObject *gat = PyList_New(r->n_consumers);
    PyObject *lag = PyList_New(r->n_consumers);
    PyObject *parts = participants_list(r, 1);
    PyObject *result = NULL;
    if (gat == NULL || lag == NULL || parts == NULL) goto done;
    int64_t mn = INT64_MAX;
    for (uint32_t i = 0; i < r->n_consumers; i++) {
        int64_t g = atomic_load_explicit(&r->gating[i].seq, memory_order_acquire);
        if (g < mn) mn = g;
        PyList_SET_ITEM(gat, i, PyLong_FromLongLong(g));
        PyList_SET_ITEM(lag, i, PyLong_FromLongLong(cursor > g ? sat_sub(cursor, g) : 0));
    }
    int64_t fill = cursor > mn ? sat_sub(cursor, mn) : 0;
    ring_header_t *h = (ring_header_t *)(void *)r->base;
    result = Py_BuildValue("{sLsLsOsOsLsLsIsIsOsOsy#sLsOsLsIsK}", "cursor", (long long)cursor, "claim", (long long)claim,
                           "gating", gat, "lag", lag, "fill", (long long)fill, "capacity", (long long)r->capacity,
                           "slot_bytes", r->slot_bytes, "n_consumers", r->n_consumers, "participants", parts,
                           "stop", stop_set(r) ? Py_True : Py_False, "spec_hash", (const char *)h->spec_hash,
                           (Py_ssize_t)32, "created_ns", (long long)h->created_ns, "multi_producer",
                           (r->flags & FLAG_MULTI_PRODUCER) ? Py_True : Py_False, "now_mono_ns",
                           (long long)mono_ns(), "creator_pid", h->creator_pid, "repaired",
                           (unsigned long long)atomic_load_explicit(&r->stop->repaired, memory_order_relaxed));
done:
    Py_XDECREF(gat);
    Py_XDECREF(lag);
    Py_XDECREF(parts);
    return result;
}

/* ============================================================================
 * Properties
 * ============================================================================ */

#define RING_GET_GUARD \
    if (ring_check(r) < 0) return NULL

static PyObject *Ring_get_capacity(RingObject *r, void *c) { RING_GET_GUARD; return PyLong_FromLongLong(r->capacity); }
static PyObject *Ring_get_slot_bytes(RingObject *r, void *c) { RING_GET_GUARD; return PyLong_FromUnsignedLong(r->slot_bytes); }
static PyObject *Ring_get_n_consumers(RingObject *r, void *c) { RING_GET_GUARD; return PyLong_FromUnsignedLong(r->n_consumers); }
static PyObject *Ring_get_multi(RingObject *r, void *c) { RING_GET_GUARD; return PyBool_FromLong(r->flags & FLAG_MULTI_PRODUCER); }
static PyObject *Ring_get_file_bytes(RingObject *r, void *c) { RING_GET_GUARD; return PyLong_FromSize_t(r->map_bytes); }
static PyObject *Ring_get_closed(RingObject *r, void *c) { return PyBool_FromLong(r->closed); }
static PyObject *Ring_get_path(RingObject *r, void *c) { Py_INCREF(r->path); return r->path; }

static PyObject *Ring_get_deps(RingObject *r, void *c) {
    RING_GET_GUARD;
    PyObject *t = PyTuple_New(r->n_consumers);
    if (t == NULL) return NULL;
    for (uint32_t i = 0; i < r->n_consumers; i++) PyTuple_SET_ITEM(t, i, PyLong_FromUnsignedLong(r->deps[i]));
    return t;
}

static PyObject *Ring_get_spec_hash(RingObject *r, void *c) {
    RING_GET_GUARD;
    return PyBytes_FromStringAndSize((const char *)((ring_header_t *)(void *)r->base)->spec_hash, 32);
}

static PyObject *Ring_get_repaired(RingObject *r, void *c) {
    RING_GET_GUARD;
    return PyLong_FromUnsignedLongLong(atomic_load_explicit(&r->stop->repaired, memory_order_relaxed));
}

static PyObject *Ring_get_created_ns(RingObject *r, void *c) {
    RING_GET_GUARD;
    return PyLong_FromUnsignedLongLong(((ring_header_t *)(void *)r->base)->created_ns);
}

static PyGetSetDef Ring_getset[] = {
    {"capacity", (getter)Ring_get_capacity, NULL, "number of slots (a power of two)", NULL},
    {"slot_bytes", (getter)Ring_get_slot_bytes, NULL, "payload bytes per slot", NULL},
    {"n_consumers", (getter)Ring_get_n_consumers, NULL, "number of consumer gating cells", NULL},
    {"deps", (getter)Ring_get_deps, NULL, "dependency bitmask per consumer", NULL},
    {"spec_hash", (getter)Ring_get_spec_hash, NULL, "32 raw bytes of the spec hash", NULL},
    {"created_ns", (getter)Ring_get_created_ns, NULL, "creation time, unix ns", NULL},
    {"repaired", (getter)Ring_get_repaired, NULL, "slots published as dropped by hole repairs", NULL},
    {"multi_producer", (getter)Ring_get_multi, NULL, "whether producers claim with CAS", NULL},
    {"file_bytes", (getter)Ring_get_file_bytes, NULL, "size of the mapping", NULL},
    {"closed", (getter)Ring_get_closed, NULL, "whether close() was called", NULL},
    {"path", (getter)Ring_get_path, NULL, "the ring file path", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef Ring_methods[] = {
    {"create", (PyCFunction)(void (*)(void))Ring_create, METH_VARARGS | METH_KEYWORDS | METH_STATIC,
     "create(path, capacity, slot_bytes, deps, spec_hash, *, multi_producer=False) -> Ring"},
    {"attach", (PyCFunction)(void (*)(void))Ring_attach, METH_VARARGS | METH_KEYWORDS | METH_STATIC,
     "attach(path, *, expect_hash=None) -> Ring"},
    {"close", (PyCFunction)Ring_close, METH_NOARGS, "unmap (deferred while slot views are alive)"},
    {"__enter__", (PyCFunction)Ring_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Ring_exit, METH_VARARGS, NULL},
    {"publish", (PyCFunction)(void (*)(void))Ring_publish, FASTKW, "publish(data, wait, timeout_ns) -> seq"},
    {"try_publish", (PyCFunction)Ring_try_publish, METH_O, "try_publish(data) -> bool"},
    {"publish_many", (PyCFunction)(void (*)(void))Ring_publish_many, FASTKW,
     "publish_many(items, wait, timeout_ns) -> last seq"},
    {"claim", (PyCFunction)(void (*)(void))Ring_claim, FASTKW, "claim(wait, timeout_ns) -> seq"},
    {"slot", (PyCFunction)Ring_slot, METH_O, "slot(seq) -> writable memoryview of a claimed slot"},
    {"commit", (PyCFunction)(void (*)(void))Ring_commit, METH_FASTCALL, "commit(seq, length)"},
    {"wait_for", (PyCFunction)(void (*)(void))Ring_wait_for, FASTKW,
     "wait_for(c, seq, wait, timeout_ns) -> highest available seq, or -1"},
    {"read", (PyCFunction)Ring_read, METH_O, "read(seq) -> read-only memoryview of the message"},
    {"read_bytes", (PyCFunction)Ring_read_bytes, METH_O, "read_bytes(seq) -> bytes copy of the message"},
    {"stage_slot", (PyCFunction)Ring_stage_slot, METH_O, "stage_slot(seq) -> writable memoryview (slot_bytes)"},
    {"length", (PyCFunction)Ring_length, METH_O, "length(seq) -> int (DROPPED_LENGTH when dropped)"},
    {"set_length", (PyCFunction)(void (*)(void))Ring_set_length, METH_FASTCALL, "set_length(seq, n)"},
    {"release", (PyCFunction)(void (*)(void))Ring_release, METH_FASTCALL, "release(c, seq)"},
    {"gating", (PyCFunction)Ring_gating, METH_O, "gating(c) -> int"},
    {"next_for", (PyCFunction)Ring_next_for, METH_O, "next_for(c) -> gating(c) + 1"},
    {"cursor", (PyCFunction)Ring_cursor, METH_NOARGS, "cursor() -> highest published seq"},
    {"recover", (PyCFunction)Ring_recover, METH_O, "recover(c) -> bool (a pending redo was completed)"},
    {"modify_begin", (PyCFunction)(void (*)(void))Ring_modify_begin, METH_FASTCALL,
     "modify_begin(c, seq) -> writable scratch memoryview holding a copy of the message"},
    {"modify_commit", (PyCFunction)(void (*)(void))Ring_modify_commit, METH_FASTCALL,
     "modify_commit(c, seq, length): crash-atomically copy the scratch into the slot"},
    {"run_builtin", (PyCFunction)(void (*)(void))Ring_run_builtin, METH_VARARGS | METH_KEYWORDS,
     "run_builtin(c, op, delta, wait=WAIT_BACKOFF, *, heartbeat_slot=-1) -> last seq"},
    {"count_sink", (PyCFunction)(void (*)(void))Ring_count_sink, METH_VARARGS | METH_KEYWORDS,
     "count_sink(c, wait=WAIT_BACKOFF, *, heartbeat_slot=-1) -> (messages, bytes)"},
    {"run_stage", (PyCFunction)(void (*)(void))Ring_run_stage, METH_VARARGS | METH_KEYWORDS,
     "run_stage(c, fn, form, wait=WAIT_BACKOFF, *, heartbeat_slot=-1, side_effect=False, contract_error=None) "
     "-> last seq"},
    {"drain", (PyCFunction)(void (*)(void))Ring_drain, FASTKW,
     "drain(c, max_n, wait=WAIT_BACKOFF, timeout_ns=-1) -> (messages, dropped, last seq)"},
    {"request_stop", (PyCFunction)Ring_request_stop, METH_NOARGS, "set the stop word and wake every waiter"},
    {"clear_stop", (PyCFunction)Ring_clear_stop, METH_NOARGS, "clear the stop word"},
    {"stop_requested", (PyCFunction)Ring_stop_requested, METH_NOARGS, "stop_requested() -> bool"},
    {"register_participant", (PyCFunction)(void (*)(void))Ring_register_participant, METH_FASTCALL,
     "register_participant(role, pid) -> slot"},
    {"heartbeat", (PyCFunction)Ring_heartbeat, METH_O, "heartbeat(slot)"},
    {"unregister_participant", (PyCFunction)(void (*)(void))Ring_unregister_participant, METH_FASTCALL,
     "unregister_participant(slot, exited=False)"},
    {"participants", (PyCFunction)Ring_participants, METH_NOARGS,
     "participants() -> [(role, pid, heartbeat_ns, state)]"},
    {"participant_slots", (PyCFunction)Ring_participant_slots, METH_NOARGS,
     "participant_slots() -> [(slot, role, pid, heartbeat_ns, state)]"},
    {"snapshot", (PyCFunction)Ring_snapshot, METH_NOARGS, "snapshot() -> dict (reads only)"},
    {"repair", (PyCFunction)Ring_repair, METH_NOARGS,
     "repair() -> slots dropped: publish as dropped what producers that are gone claimed and never published"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "byteor._native.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_as_buffer = &Ring_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A sequenced shared-memory ring (create/attach only).",
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
};

/* ============================================================================
 * Module
 * ============================================================================ */

static PyMethodDef native_functions[] = {
    {"run_role", (PyCFunction)(void (*)(void))native_run_role, METH_VARARGS | METH_KEYWORDS,
     "run_role(kind, inputs, outputs, stats, *, route, key_offset, key_len, op, delta, fn, form, side_effect, "
     "wait, parent_pid, error, participant_role) -> messages in: a LaneGraph role as a native loop"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "byteor._native", "byteor's C core.", -1, native_functions, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) return NULL;
    if (PyType_Ready(&RingType) < 0) goto fail;
    membarrier_register();
    pthread_atfork(NULL, NULL, membarrier_atfork_child);
    AttachError = PyErr_NewExceptionWithDoc("byteor._native.AttachError",
                                            "A ring file is foreign, truncated or does not match.",
                                            PyExc_ValueError, NULL);
    if (AttachError == NULL) goto fail;
    Py_INCREF(AttachError);
    if (PyModule_AddObject(m, "AttachError", AttachError) < 0) goto fail;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0) goto fail;
    if (byteor_journal_init(m) < 0) goto fail;
    if (byteor_dataguard_init(m) < 0) goto fail;
    if (byteor_framing_init(m) < 0) goto fail;
    if (PyType_Ready(&IngestType) < 0 || PyType_Ready(&EgressType) < 0) goto fail;
    Py_INCREF(&IngestType);
    if (PyModule_AddObject(m, "Ingest", (PyObject *)&IngestType) < 0) goto fail;
    Py_INCREF(&EgressType);
    if (PyModule_AddObject(m, "Egress", (PyObject *)&EgressType) < 0) goto fail;
    struct {
        const char *name;
        long long value;
    } consts[] = {
        {"ABI_VERSION", BYTEOR_NATIVE_ABI}, {"LAYOUT_VERSION", RING_LAYOUT_VERSION},
        {"WAIT_SPIN", WAIT_SPIN},           {"WAIT_YIELD", WAIT_YIELD},
        {"WAIT_BACKOFF", WAIT_BACKOFF},     {"WAIT_BLOCK", WAIT_BLOCK},
        {"OP_IDENTITY", OP_IDENTITY},       {"OP_ADD_U8", OP_ADD_U8},
        {"DROPPED_LENGTH", DROPPED_LENGTH}, {"MAX_CONSUMERS", MAX_CONSUMERS},
        {"MAX_PARTICIPANTS", MAX_PARTICIPANTS}, {"PARTICIPANT_FREE", PART_FREE},
        {"PARTICIPANT_RUNNING", PART_RUNNING},  {"PARTICIPANT_EXITED", PART_EXITED},
        {"HEADER_MIN_BYTES", OFF_SCRATCH},
        {"FORM_MAP", FORM_MAP},             {"FORM_FILTER", FORM_FILTER},
        {"FORM_INPLACE", FORM_INPLACE},     {"FORM_READONLY", FORM_READONLY},
        {"ROLE_STATS_BYTES", ST_BYTES},
    };
    for (size_t i = 0; i < sizeof(consts) / sizeof(consts[0]); i++) {
        PyObject *v = PyLong_FromLongLong(consts[i].value);
        if (v == NULL || PyModule_AddObject(m, consts[i].name, v) < 0) {
            Py_XDECREF(v);
            goto fail;
        }
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
