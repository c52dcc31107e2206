// A persistent pthread pool with spin-then-sleep dispatch.
//
// Decoding a small model issues a few hundred short matmuls per token, each
// worth tens of microseconds, so waking goroutines or futexes per call would
// cost a large share of the step. The caller publishes a task by bumping a
// generation counter; workers spin on it (with pause) for a while after each
// task and only then sleep on a condition variable. The caller takes part as
// thread 0 and spins until every worker has reported done.
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "tk.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

// About 0.5 ms of spinning on Zen 4 before a worker sleeps: long enough to
// span the Go-side work between two kernels of one step, short enough that an
// idle backend leaves the cores within a millisecond.
enum { SPIN_ITERS = 1 << 14 };

struct tk_pool {
	int n;  // threads including the caller
	pthread_t *threads;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	_Atomic unsigned gen;
	_Atomic int done;
	_Atomic int stop;
	tk_task_fn fn;
	void *arg;
};

typedef struct {
	tk_pool *p;
	int ith;
} worker_arg;

static void *worker(void *v) {
	worker_arg wa = *(worker_arg *)v;
	free(v);
	tk_pool *p = wa.p;
	unsigned seen = 0;
	for (;;) {
		unsigned g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
			if (++spins < SPIN_ITERS) {
				CPU_RELAX();
				continue;
			}
			pthread_mutex_lock(&p->mu);
			while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen &&
			       !atomic_load(&p->stop)) {
				pthread_cond_wait(&p->cv, &p->mu);
			}
			pthread_mutex_unlock(&p->mu);
			spins = 0;
			if (atomic_load(&p->stop)) {
				return NULL;
			}
		}
		seen = g;
		if (atomic_load(&p->stop)) {
			return NULL;
		}
		p->fn(p->arg, wa.ith, p->n);
		atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
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
	p->n = nthreads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->threads = calloc((size_t)nthreads, sizeof(pthread_t));
	if (!p->threads) {
		free(p);
		return NULL;
	}
	for (int i = 1; i < nthreads; i++) {
		worker_arg *wa = malloc(sizeof(*wa));
		if (!wa) {
			p->n = i;
			tk_pool_free(p);
			return NULL;
		}
		wa->p = p;
		wa->ith = i;
		if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
			free(wa);
			p->n = i;
			tk_pool_free(p);
			return NULL;
		}
	}
	return p;
}

int tk_pool_threads(const tk_pool *p) { return p->n; }

void tk_pool_run(tk_pool *p, tk_task_fn fn, void *arg) {
	if (p->n == 1) {
		fn(arg, 0, 1);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	atomic_store_explicit(&p->done, 0, memory_order_relaxed);
	// The generation bump is made under the mutex so a worker that is about
	// to sleep either sees it or is woken by the broadcast.
	pthread_mutex_lock(&p->mu);
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	fn(arg, 0, p->n);
	int spins = 0;
	while (atomic_load_explicit(&p->done, memory_order_acquire) != p->n - 1) {
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
	atomic_fetch_add(&p->gen, 1);
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
