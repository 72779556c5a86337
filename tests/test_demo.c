/* A miniature `rlhi demo`: the whole chain (base model, on-policy logs,
 * pipeline, pairs, SFT/DPO variants, simulated evaluation, report) with a
 * tiny model and world; checks that the table holds real numbers. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "rlhi/demo.h"

static bool in01(double x)
{
    return x >= 0 && x <= 1;
}

int main(void)
{
    char dir[] = "/tmp/rlhi-demo-XXXXXX", cmd[128];
    struct rlhi_demo_opts o;
    struct rlhi_demo_result res;
    int i, ran = 0;

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    rlhi_demo_opts_default(&o);
    o.work_dir = dir;
    o.tiny = true;

    TEST("miniature demo runs end to end") {
        CHECK_OK(rlhi_demo_run(&o, &res));
        CHECK_INT_EQ(res.n_rows, 8);
        CHECK(rlhi_path_exists(res.report_path));
        CHECK(res.users > 0 && res.heldout == 2 * res.users);
        CHECK(res.conversations > 0);
    }
    TEST("every row has numbers in [0,1] or says why it did not run") {
        for (i = 0; i < res.n_rows; i++) {
            const struct rlhi_demo_row *r = &res.rows[i];

            if (r->run) {
                ran++;
                CHECK_MSG(in01(r->win) && in01(r->lo) && in01(r->hi) &&
                              r->lo <= r->win && r->win <= r->hi,
                          "%s: %g (%g-%g)", r->name, r->win, r->lo, r->hi);
                CHECK_MSG(in01(r->correct), "%s: correct %g", r->name,
                          r->correct);
            } else {
                CHECK_MSG(!strncmp(r->why, "not run: ", 9), "%s: '%s'",
                          r->name, r->why);
            }
        }
        /* The base row compares the base with itself: exactly even. */
        CHECK(res.rows[0].run);
        CHECK_NEAR(res.rows[0].win, 0.5, 0, 0);
        CHECK_MSG(ran >= 4, "only %d rows ran", ran);
        CHECK(in01(res.fb_precision) && in01(res.fb_recall));
        for (i = 0; i < RLHI_SIM_NDIM; i++)
            CHECK(in01(res.persona_acc[i]));
        CHECK(in01(res.quality.follow) && in01(res.quality.readable));
    }
    TEST("the table prints, labelled simulated") {
        FILE *f = tmpfile();
        char buf[8192];
        size_t n;

        CHECK(f != NULL);
        if (f) {
            CHECK_OK(rlhi_demo_table_write(&res, f));
            rewind(f);
            n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            CHECK(strstr(buf, "simulated") != NULL);
            CHECK(strstr(buf, "RLHI: user-guided rewrites") != NULL);
            fclose(f);
        }
    }
    TEST("a second run finds the base model in the cache") {
        struct rlhi_demo_base_opts bo;
        struct rlhi_demo_base_info info;
        char *mdir = NULL;

        /* The tiny recipe, as rlhi_demo_run sets it. */
        rlhi_demo_base_opts_default(&bo);
        bo.conversations = 200;
        bo.vocab_size = 320;
        bo.dim = 32;
        bo.hidden_dim = 64;
        bo.n_layers = 1;
        bo.n_heads = 2;
        bo.max_seq_len = 256;
        bo.sft_steps = 4;
        bo.batch_size = 4;
        bo.max_length = 128;
        CHECK_OK(rlhi_demo_base_model(&bo, dir, &mdir, &info));
        CHECK(info.cached);
        rlhi_free(mdir);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd))
        fprintf(stderr, "could not remove %s\n", dir);
    return check_summary();
}
