// A persistent pthread pool with spin/yield/sleep dispatch and dynamic chunks.
//
// Decoding a small model issues a few hundred short matmuls per token, each
// worth tens of microseconds, so waking goroutines or futexes per call would
// cost a large share of the step. The caller publishes a task by storing a new
// state word; after each task workers watch it, spinning with pause, then
// yielding, and only then sleep on a condition variable (see SPIN_ITERS).
//
// The state word packs (generation, chunk count, next chunk) so that one
// atomic fetch-add both claims a chunk and tells the claimant which task it
// belongs to. The caller claims chunks too and then waits only for chunks
// that other threads have started: on a machine shared with other processes
// a descheduled worker delays the call by one chunk at most, and a worker
// that never wakes delays it not at all.
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "tk.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

// Waiting escalates: SPIN_ITERS pauses (tens of microseconds: the Go-side
// work between two kernels of one decode step), then up to YIELD_ITERS
// sched_yield calls (about half a millisecond), then sleep. Yielding instead
// of spinning matters when the machine is oversubscribed: a spinning worker
// would hold the very core the caller needs to finish its share.
enum { SPIN_ITERS = 1 << 11, YIELD_ITERS = 512 };

// State word layout: generation (24 bits) | chunk count (20) | next chunk (20).
#define ST_GEN(v) ((v) >> 40)
#define ST_TOTAL(v) (((v) >> 20) & 0xfffff)
#define ST_NEXT(v) ((v) & 0xfffff)
#define ST_MAKE(g, t) ((((uint64_t)(g) & 0xffffff) << 40) | ((uint64_t)(t) << 20))

struct tk_pool {
	int n;  // threads including the caller
	pthread_t *threads;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	_Atomic uint64_t state;
	_Atomic int finished;  // chunks of the current task completed by workers
	_Atomic int stop;
	tk_task_fn fn;
	void *arg;
};

typedef struct {
	tk_pool *p;
	int tid;
} worker_arg;

// claim runs chunks of the task published as gen until none are left and
// returns how many it ran. A claim that lands in a newer task runs that
// task's chunk: the fetch-add made it the chunk's owner.
static int claim(tk_pool *p, int tid) {
	int ran = 0;
	for (;;) {
		uint64_t v = atomic_fetch_add_explicit(&p->state, 1, memory_order_acq_rel);
		if (ST_NEXT(v) >= ST_TOTAL(v)) {
			return ran;
		}
		p->fn(p->arg, (int)ST_NEXT(v), (int)ST_TOTAL(v), tid);
		ran++;
		if (tid != 0) {
			atomic_fetch_add_explicit(&p->finished, 1, memory_order_release);
		}
	}
}

static void *worker(void *v) {
	worker_arg wa = *(worker_arg *)v;
	free(v);
	tk_pool *p = wa.p;
	uint64_t seen = ST_GEN(atomic_load(&p->state));
	for (;;) {
		int spins = 0;
		uint64_t g;
		while ((g = ST_GEN(atomic_load_explicit(&p->state, memory_order_acquire))) == seen) {
			if (atomic_load_explicit(&p->stop, memory_order_relaxed)) {
				return NULL;
			}
			if (++spins < SPIN_ITERS) {
				CPU_RELAX();
				continue;
			}
			if (spins < SPIN_ITERS + YIELD_ITERS) {
				sched_yield();
				continue;
			}
			pthread_mutex_lock(&p->mu);
			while (ST_GEN(atomic_load(&p->state)) == seen && !atomic_load(&p->stop)) {
				pthread_cond_wait(&p->cv, &p->mu);
			}
			pthread_mutex_unlock(&p->mu);
			spins = 0;
		}
		seen = g;
		if (atomic_load(&p->stop)) {
			return NULL;
		}
		claim(p, wa.tid);
	}
}

tk_pool *tk_pool_new(int nthreads) {
	if (nthreads < 1) {
		return NULL;
	}
	tk_pool *p = calloc(1, sizeof(*p));
	if (!p) {
		return NULL;
	}
	p->n = 1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->threads = calloc((size_t)nthreads, sizeof(pthread_t));
	if (!p->threads) {
		tk_pool_free(p);
		return NULL;
	}
	for (int i = 1; i < nthreads; i++) {
		worker_arg *wa = malloc(sizeof(*wa));
		if (!wa) {
			tk_pool_free(p);
			return NULL;
		}
		wa->p = p;
		wa->tid = i;
		if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
			free(wa);
			tk_pool_free(p);
			return NULL;
		}
		p->n = i + 1;
	}
	return p;
}

int tk_pool_threads(const tk_pool *p) { return p->n; }

void tk_pool_run(tk_pool *p, tk_task_fn fn, void *arg, int nchunks) {
	if (nchunks <= 0) {
		return;
	}
	// The state word holds chunk counts below 2^20 with room for every
	// thread's one failed claim; larger tasks (none of Tandem's shapes) run
	// on the caller alone.
	if (p->n == 1 || nchunks == 1 || nchunks >= (1 << 19)) {
		for (int c = 0; c < nchunks; c++) fn(arg, c, nchunks, 0);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	atomic_store_explicit(&p->finished, 0, memory_order_relaxed);
	// Published under the mutex so a worker about to sleep either sees the
	// new generation or is woken by the broadcast.
	pthread_mutex_lock(&p->mu);
	uint64_t gen = ST_GEN(atomic_load_explicit(&p->state, memory_order_relaxed)) + 1;
	atomic_store_explicit(&p->state, ST_MAKE(gen, nchunks), memory_order_release);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	int mine = claim(p, 0);
	int spins = 0;
	while (atomic_load_explicit(&p->finished, memory_order_acquire) + mine != nchunks) {
		if (++spins < SPIN_ITERS) {
			CPU_RELAX();
		} else {
			sched_yield();
		}
	}
}

void tk_pool_free(tk_pool *p) {
	if (!p) {
		return;
	}
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->stop, 1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->n; i++) {
		pthread_join(p->threads[i], NULL);
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
}
