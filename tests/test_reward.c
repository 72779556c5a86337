/* Tests of the reward model: the scalar head's gradient against finite
 * differences, save/load of score.weight, and learning a synthetic
 * preference (held-out accuracy well above chance). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "learn_fixtures.h"
#include "rlhi/reward.h"
#include "rlhi/safetensors.h"
#include "rlhi/train.h"

int main(void)
{
    char tmp[] = "/tmp/rlhi-test-reward-XXXXXX", out[512], path[600];
    struct rlhi_reward *rm = NULL, *back = NULL;
    struct rlhi_dpo_data d = {0}, h = {0};
    struct rlhi_reward_config cfg;
    struct rlhi_reward_result res;
    struct rlhi_reward_metrics mt0, mt;

    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    rlhi_log_set_level(RLHI_LOG_WARN);

    TEST("reward score is the head on the last hidden state") {
        int32_t s1[5] = {11, 12, 13, 14, 15}, s2[3] = {11, 12, 13};
        const int32_t *seqs[2] = {s1, s2};
        int lens[2] = {5, 3};
        double r2[2], r1;

        CHECK_OK(rlhi_reward_new(&rm, tiny_model(LV, 3, 0.1f), 9));
        CHECK_OK(rlhi_reward_score(rm, seqs, lens, 2, r2));
        /* padding to the longer row must not change the shorter */
        CHECK_OK(rlhi_reward_score(rm, seqs + 1, lens + 1, 1, &r1));
        CHECK_NEAR(r2[1], r1, 1e-6, 1e-5);
        CHECK(r2[0] != r2[1]);
        /* the inference pass equals the training engine's forward */
        {
            struct rlhi_train *t = NULL;
            struct rlhi_batch b = {1, 5, s1, NULL, NULL};
            double ref = 0;

            CHECK_OK(rlhi_train_new(&t, rm->m, 1, 5));
            CHECK_OK(t ? rlhi_train_forward(t, &b) : RLHI_ENOMEM);
            for (int j = 0; t && j < rm->m->cfg.dim; j++)
                ref += (double)t->out[4 * rm->m->cfg.dim + j] * rm->score[j];
            CHECK_NEAR(r2[0], ref, 1e-6, 1e-5);
            rlhi_train_free(t);
        }
        lens[0] = 65;
        CHECK(rlhi_reward_score(rm, seqs, lens, 1, &r1) == RLHI_EINVAL);
    }

    TEST("reward model learns a marker preference") {
        marker_pairs(&d, 1, 96, 0);
        marker_pairs(&h, 2, 64, 0);
        CHECK_OK(rlhi_reward_eval(rm, &h, &mt0));
        CHECK_NEAR(mt0.loss, log(2.0), 0.05, 0); /* untrained: ~ln 2 */
        rlhi_reward_config_init(&cfg);
        snprintf(out, sizeof out, "%s/rm", tmp);
        cfg.output_dir = out;
        cfg.learning_rate = 3e-3;
        cfg.num_train_epochs = 4;
        cfg.batch_size = 8;
        cfg.logging_steps = 12;
        cfg.save_steps = 0;
        cfg.center_rewards_coefficient = 0.01;
        CHECK_OK(rlhi_reward_train(rm, &d, &cfg, &res));
        CHECK_INT_EQ(res.steps, 48);
        CHECK_OK(rlhi_reward_eval(rm, &h, &mt));
        CHECK_MSG(mt.accuracy > 0.85, "held-out accuracy %.3f",
                  mt.accuracy);
        CHECK(mt.loss < mt0.loss);
        CHECK(mt.min <= mt.mean && mt.mean <= mt.max);
    }

    TEST("score.weight saved and loaded") {
        struct rlhi_safetensors *st = NULL;
        const struct rlhi_st_tensor *w;

        snprintf(path, sizeof path, "%s/model.safetensors", out);
        CHECK_OK(rlhi_safetensors_open(&st, path));
        w = st ? rlhi_safetensors_find(st, "score.weight") : NULL;
        CHECK(w && w->ndim == 2 && w->shape[0] == 1 && w->shape[1] == 32);
        rlhi_safetensors_close(st);
        CHECK_OK(rlhi_reward_load(&back, out));
        if (back) {
            struct rlhi_reward_metrics mb;

            CHECK(!memcmp(back->score, rm->score, 32 * sizeof(float)));
            CHECK_OK(rlhi_reward_eval(back, &h, &mb));
            CHECK_NEAR(mb.accuracy, mt.accuracy, 0, 0);
            CHECK_NEAR(mb.loss, mt.loss, 1e-6, 1e-5);
        }
    }

    TEST("a plain model is not a reward model") {
        struct rlhi_reward *x = NULL;

        snprintf(path, sizeof path, "%s/plain", tmp);
        CHECK_OK(rlhi_model_save_hf(rm->m, path, false));
        CHECK(rlhi_reward_load(&x, path) == RLHI_ENOTFOUND);
        CHECK(strstr(rlhi_errmsg(), "score.weight") != NULL);
    }

    TEST("margin shifts the Bradley-Terry loss") {
        struct rlhi_dpo_data hm = {0};
        struct rlhi_reward_metrics m2;

        marker_pairs(&hm, 2, 64, 1.0f);
        CHECK_OK(rlhi_reward_eval(rm, &hm, &m2));
        CHECK(m2.loss > mt.loss);          /* harder with a margin */
        CHECK_NEAR(m2.margin, mt.margin, 1e-9, 1e-9); /* same rewards */
        rlhi_dpo_data_release(&hm);
    }

    rlhi_reward_free(rm);
    rlhi_reward_free(back);
    rlhi_dpo_data_release(&d);
    rlhi_dpo_data_release(&h);
    remove_tmpdir(tmp);
    return check_summary();
}
