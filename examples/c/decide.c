/*
 * Loads the default configuration, makes a limiter of 10 calls per 10 seconds
 * and decides 12 calls for one key: the first 10 are allowed, the last 2 are
 * told when to retry. The same key on the endpoint "search" of that limiter
 * has a limit of its own, and is counted under that name. Prints what the
 * store counted (the same text as the /metrics page). Then decides once more
 * without blocking (the answer comes to
 * a callback on a thread of Flux), and shows how an error reads (a limit of 0
 * requests). Last, a limiter of two rates at once ("5/minute;3/hour"): its
 * quotas, the one that refuses, a refund and a reset.
 *
 * Doubles as a test: exits non-zero when the library answers otherwise, and
 * `make test` runs it under valgrind to check that nothing leaks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flux.h"

static const char *source_name(uint32_t source) {
    switch (source) {
    case FLUX_SOURCE_STORAGE:
        return "storage";
    case FLUX_SOURCE_FAIL_OPEN:
        return "fail_open";
    case FLUX_SOURCE_LOCAL_CACHE:
        return "local_cache";
    default:
        return "unknown";
    }
}

/* Prints the calling thread's last error and returns `result`. */
static flux_result report(const char *what, flux_result result) {
    char message[512];
    size_t full = flux_last_error(message, sizeof message);
    fprintf(stderr, "%s failed (%u): %s%s\n", what, (unsigned)result, message,
            full >= sizeof message ? "..." : "");
    return result;
}

/* What the callback of the non-blocking decision saw. */
struct async_outcome {
    int calls;
    flux_result result;
    flux_decision decision;
};

static void on_decision(void *user_data, flux_result result, const flux_decision *decision,
                        const char *message) {
    struct async_outcome *outcome = user_data;
    outcome->calls++;
    outcome->result = result;
    if (decision != NULL) {
        outcome->decision = *decision;
    }
    if (message != NULL) {
        fprintf(stderr, "the async decision failed: %s\n", message);
    }
}

/* Prints the store's request counters (Prometheus text) and checks them: a
 * first call asks for the size, a second fills a buffer of that size. */
static int print_metrics(const flux_store *store) {
    size_t needed = 0;
    flux_result result = flux_store_metrics(store, FLUX_METRICS_PROMETHEUS, NULL, 0, &needed);
    if (result != FLUX_RESULT_BUFFER_TOO_SMALL) {
        report("flux_store_metrics", result);
        return 1;
    }
    char *text = malloc(needed);
    if (text == NULL) {
        return 1;
    }
    size_t written = 0;
    result = flux_store_metrics(store, FLUX_METRICS_PROMETHEUS, text, needed, &written);
    if (result != FLUX_RESULT_OK) {
        free(text);
        report("flux_store_metrics", result);
        return 1;
    }
    int status = strstr(text, "{endpoint=\"example\",decision=\"allowed\"} 10\n") &&
                         strstr(text, "{endpoint=\"search\",decision=\"allowed\"} 1\n")
                     ? 0
                     : 1;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strncmp(line, "flux_requests_total{", 20) == 0) {
            printf("%s\n", line);
        }
    }
    free(text);
    if (status != 0) {
        fprintf(stderr, "expected 10 allowed calls on example, 1 on search in the metrics\n");
    }
    return status;
}

static int bad_params_are_refused(const flux_store *store, const flux_config *config) {
    flux_limit_params params;
    memset(&params, 0, sizeof params);
    params.set = FLUX_PARAM_REQUESTS | FLUX_PARAM_PERIOD;
    params.requests = 0;
    params.period = 10.0;

    flux_limiter *limiter = NULL;
    flux_result result = flux_limiter_new(store, config, "example", NULL, &params, &limiter);
    if (result != FLUX_RESULT_INVALID_LIMIT || limiter != NULL) {
        fprintf(stderr, "expected FLUX_RESULT_INVALID_LIMIT for requests = 0, got %u\n",
                (unsigned)result);
        flux_limiter_free(limiter);
        return 1;
    }
    char message[512];
    flux_last_error(message, sizeof message);
    printf("requests = 0 is refused: %s\n", message);
    return 0;
}

/* A limiter of several rates admits a call only when every quota does, and
 * reports the quota closest to refusing: here the hour's 3 bind first. */
static int several_rates(const flux_store *store, const flux_config *config) {
    flux_limit_params params;
    memset(&params, 0, sizeof params);
    params.set = FLUX_PARAM_RATE;
    params.rate = "5/minute;3/hour";
    flux_limiter *limiter = NULL;
    flux_result result = flux_limiter_new(store, config, "two-rates", NULL, &params, &limiter);
    if (result != FLUX_RESULT_OK) {
        return report("flux_limiter_new (two rates)", result);
    }
    int status = 1;
    flux_quota_info quotas[8];
    size_t count = 0;
    if ((result = flux_limiter_quotas(limiter, quotas, 8, &count)) != FLUX_RESULT_OK) {
        report("flux_limiter_quotas", result);
        goto done;
    }
    for (size_t i = 0; i < count; i++) {
        printf("quota %zu: %llu per %.0fs\n", i, (unsigned long long)quotas[i].requests,
               quotas[i].period);
    }
    static const uint8_t user[] = "user-7";
    const size_t user_len = sizeof user - 1;
    flux_decision decision;
    int allowed = 0;
    for (int call = 1; call <= 4; call++) {
        if ((result = flux_limiter_decide(limiter, user, user_len, 1, &decision)) !=
            FLUX_RESULT_OK) {
            report("flux_limiter_decide (two rates)", result);
            goto done;
        }
        allowed += decision.allowed;
    }
    printf("two rates: %d of 4 allowed, the last refused by quota %u\n", allowed,
           (unsigned)decision.quota);
    if (count != 2 || allowed != 3 || decision.allowed || decision.quota != 1) {
        fprintf(stderr, "expected 2 quotas, 3 of 4 calls allowed, the hour (quota 1) refusing\n");
        goto done;
    }
    /* A refund gives the call back to every quota: the next call is admitted,
     * as the hour's last. */
    if ((result = flux_limiter_apply(limiter, FLUX_OP_REFUND, NULL, 0, user, user_len, 1,
                                     &decision)) != FLUX_RESULT_OK) {
        report("flux_limiter_apply (refund)", result);
        goto done;
    }
    if (!decision.allowed || decision.remaining != 0 || decision.quota != 1) {
        fprintf(stderr, "expected a refund to admit the next call as the hour's last\n");
        goto done;
    }
    uint64_t removed = 0;
    if ((result = flux_limiter_reset(limiter, NULL, 0, user, user_len, &removed)) !=
        FLUX_RESULT_OK) {
        report("flux_limiter_reset", result);
        goto done;
    }
    printf("refund: the next call is admitted; reset: %llu keys forgotten\n",
           (unsigned long long)removed);
    status = removed == 2 ? 0 : 1;
    if (status != 0) {
        fprintf(stderr, "expected a reset to forget one key per quota\n");
    }
done:
    flux_limiter_free(limiter);
    return status;
}

int main(void) {
    int status = 1;
    flux_config *config = NULL;
    flux_store *store = NULL;
    flux_limiter *limiter = NULL;
    flux_result result;

    printf("flux %s\n", flux_version());

    if ((result = flux_config_default(&config)) != FLUX_RESULT_OK) {
        report("flux_config_default", result);
        goto done;
    }
    if ((result = flux_store_new(config, &store)) != FLUX_RESULT_OK) {
        report("flux_store_new", result);
        goto done;
    }

    flux_limit_params params;
    memset(&params, 0, sizeof params);
    params.set = FLUX_PARAM_POLICY | FLUX_PARAM_REQUESTS | FLUX_PARAM_PERIOD;
    params.policy = FLUX_POLICY_GCRA;
    params.requests = 10;
    params.period = 10.0;
    if ((result = flux_limiter_new(store, config, "example", NULL, &params, &limiter)) !=
        FLUX_RESULT_OK) {
        report("flux_limiter_new", result);
        goto done;
    }

    /* Any bytes identify a caller, NUL included: the length says where the key ends. */
    static const uint8_t key[] = {'1', '0', '.', '0', '.', '0', '.', '1', 0, 'x'};
    int allowed = 0;
    for (int call = 1; call <= 12; call++) {
        flux_decision decision;
        if ((result = flux_limiter_decide(limiter, key, sizeof key, 1, &decision)) !=
            FLUX_RESULT_OK) {
            report("flux_limiter_decide", result);
            goto done;
        }
        allowed += decision.allowed;
        printf("call %2d: %-7s limit=%llu remaining=%llu reset_after=%.3fs retry_after=%.3fs "
               "source=%s\n",
               call, decision.allowed ? "allowed" : "denied", (unsigned long long)decision.limit,
               (unsigned long long)decision.remaining, decision.reset_after,
               decision.retry_after, source_name(decision.source));
    }
    if (allowed != 10) {
        fprintf(stderr, "expected 10 of 12 calls allowed, got %d\n", allowed);
        goto done;
    }

    /* An endpoint, also with its length, is a separate limit on the same limiter. */
    static const uint8_t endpoint[] = "search";
    flux_decision on_search;
    if ((result = flux_limiter_decide_endpoint(limiter, endpoint, sizeof endpoint - 1, key,
                                               sizeof key, 1, &on_search)) != FLUX_RESULT_OK) {
        report("flux_limiter_decide_endpoint", result);
        goto done;
    }
    if (!on_search.allowed) {
        fprintf(stderr, "expected the first call on search to be allowed\n");
        goto done;
    }
    printf("call on search: allowed remaining=%llu\n", (unsigned long long)on_search.remaining);

    if (print_metrics(store) != 0) {
        goto done;
    }

    struct async_outcome outcome = {0};
    if ((result = flux_limiter_decide_async(limiter, key, sizeof key, 1, on_decision, &outcome)) !=
        FLUX_RESULT_OK) {
        report("flux_limiter_decide_async", result);
        goto done;
    }

    if (bad_params_are_refused(store, config) != 0) {
        goto done;
    }
    status = several_rates(store, config);

done:
    /* Freeing the last handle of the store waits for its pending callbacks. */
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
    if (status == 0) {
        if (outcome.calls != 1 || outcome.result != FLUX_RESULT_OK || outcome.decision.allowed) {
            fprintf(stderr, "expected one denied async decision, got %d callback(s)\n",
                    outcome.calls);
            return 1;
        }
        printf("call 13 (async): denied retry_after=%.3fs\n", outcome.decision.retry_after);
    }
    return status;
}
