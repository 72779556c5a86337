/* Monotonic time, peak memory and progress reporting. */
#include "rlhi/base.h"

#include <sys/resource.h>
#include <time.h>

/* A progress line at most every 5 s keeps CI logs short but shows life. */
#define PROGRESS_EVERY_S 5.0

static rlhi_progress_fn progress_hook;
static void *progress_user;

double rlhi_time_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

size_t rlhi_peak_rss(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru))
        return 0;
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

void rlhi_progress_set_hook(rlhi_progress_fn fn, void *user)
{
    progress_hook = fn;
    progress_user = user;
}

static void show(const struct rlhi_progress *p, bool final)
{
    double dt = rlhi_time_now() - p->t_start;
    double rate = dt > 0 ? (double)p->done / dt : 0;

    if (progress_hook) {
        progress_hook(p, final, progress_user);
        return;
    }
    if (p->total && rate > 0 && !final)
        rlhi_info("%s: %llu/%llu (%.0f%%), %.1f it/s, eta %.0fs", p->label,
                  (unsigned long long)p->done, (unsigned long long)p->total,
                  100.0 * (double)p->done / (double)p->total, rate,
                  (double)(p->total - p->done) / rate);
    else
        rlhi_info("%s: %llu done%s, %.1f it/s, %.1fs", p->label,
                  (unsigned long long)p->done, final ? "" : " so far", rate,
                  dt);
}

void rlhi_progress_start(struct rlhi_progress *p, const char *label,
                         uint64_t total)
{
    p->label = label;
    p->total = total;
    p->done = 0;
    p->t_start = p->t_last = rlhi_time_now();
}

void rlhi_progress_update(struct rlhi_progress *p, uint64_t done)
{
    double now = rlhi_time_now();

    p->done = done;
    if (progress_hook || now - p->t_last >= PROGRESS_EVERY_S) {
        p->t_last = now;
        show(p, false);
    }
}

void rlhi_progress_finish(struct rlhi_progress *p)
{
    show(p, true);
}
