/* Monotonic time, peak memory and progress reporting. */
#include "rlhi/base.h"

#include <stdio.h>
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

void rlhi_progress_text(const struct rlhi_progress *p, bool final, char *buf,
                        size_t cap)
{
    double dt = rlhi_time_now() - p->t_start;
    double scale = p->bytes ? 1e-6 : 1, rate = 0;
    const char *unit = p->bytes ? " MB" : "";
    int n;

    if (dt > 0)
        rate = (double)p->done / dt;
    if (p->bytes)
        n = snprintf(buf, cap, "%.1f", (double)p->done * scale);
    else
        n = snprintf(buf, cap, "%llu", (unsigned long long)p->done);
    if (n < 0 || (size_t)n >= cap)
        return;
    if (p->total && !final) {
        if (p->bytes)
            n += snprintf(buf + n, cap - (size_t)n, "/%.1f",
                          (double)p->total * scale);
        else
            n += snprintf(buf + n, cap - (size_t)n, "/%llu",
                          (unsigned long long)p->total);
        if ((size_t)n >= cap)
            return;
        n += snprintf(buf + n, cap - (size_t)n, "%s (%.0f%%), %.1f%s/s",
                      unit, 100.0 * (double)p->done / (double)p->total,
                      rate * scale, unit);
        if ((size_t)n < cap && rate > 0)
            snprintf(buf + n, cap - (size_t)n, ", eta %.0fs",
                     (double)(p->total - p->done) / rate);
    } else {
        snprintf(buf + n, cap - (size_t)n, "%s%s, %.1f%s/s, %.1fs", unit,
                 final ? " done" : " so far", rate * scale, unit, dt);
    }
}

static void show(const struct rlhi_progress *p, bool final)
{
    char text[160];

    if (progress_hook) {
        progress_hook(p, final, progress_user);
        return;
    }
    rlhi_progress_text(p, final, text, sizeof text);
    rlhi_info("%s: %s", p->label, text);
}

void rlhi_progress_start(struct rlhi_progress *p, const char *label,
                         uint64_t total)
{
    p->label = label;
    p->total = total;
    p->done = 0;
    p->bytes = false;
    p->t_start = p->t_last = rlhi_time_now();
}

void rlhi_progress_start_bytes(struct rlhi_progress *p, const char *label,
                               uint64_t total)
{
    rlhi_progress_start(p, label, total);
    p->bytes = true;
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
