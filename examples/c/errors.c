/*
 * How errors read from C: a flux.toml with a bad value, and one that is not
 * TOML; a call of cost 0; Redis down (a port that refuses connections) with
 * fail_silently = false, which fails the call, and with true, which admits
 * it and says so once through the log callback. Each is checked for its
 * code and message, and for leaving the outputs untouched.
 *
 * Doubles as a test: exits non-zero when the library answers otherwise, and
 * `make test` runs it under valgrind to check that nothing leaks.
 */
#define _POSIX_C_SOURCE 200809L

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "flux.h"

static int failures = 0;

/* The calling thread's last error. */
static const char *last_error(void) {
    static char message[1024];
    flux_last_error(message, sizeof message);
    return message;
}

/* Checks that `result` is `expected` and that the last error starts with `start`. */
static void expect(const char *what, flux_result result, flux_result expected,
                   const char *start) {
    const char *message = last_error();
    if (result != expected || strncmp(message, start, strlen(start)) != 0) {
        fprintf(stderr, "%s: expected %u \"%s...\", got %u \"%s\"\n", what, (unsigned)expected,
                start, (unsigned)result, message);
        failures++;
        return;
    }
    printf("%s: %s\n", what, message);
}

static void check(const char *what, int ok) {
    if (!ok) {
        fprintf(stderr, "%s\n", what);
        failures++;
    }
}

/* A TCP port on 127.0.0.1 bound but never listening: connecting to it is
 * refused at once, and nothing else can take it while `*fd` is open. */
static int dead_port(int *fd) {
    struct sockaddr_in address;
    socklen_t length = sizeof address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    if (*fd < 0 || bind(*fd, (struct sockaddr *)&address, sizeof address) != 0 ||
        getsockname(*fd, (struct sockaddr *)&address, &length) != 0) {
        perror("a dead port");
        return -1;
    }
    return ntohs(address.sin_port);
}

static void bad_toml(void) {
    static const char bad_value[] = "[rate_limit]\nrequests = 0\n";
    flux_config *config = NULL;
    flux_result result = flux_config_from_toml(bad_value, strlen(bad_value), "app.toml", &config);
    expect("requests = 0", result, FLUX_RESULT_CONFIG,
           "app.toml:2: rate_limit.requests: must be a whole number of at least 1, got 0");
    check("no config on failure", config == NULL);

    static const char not_toml[] = "[rate_limit\nrequests = 5\n";
    result = flux_config_from_toml(not_toml, strlen(not_toml), "app.toml", &config);
    expect("not TOML", result, FLUX_RESULT_CONFIG, "app.toml:1: unclosed table");
    check("no config on failure", config == NULL);

    static const char unknown[] = "[flux]\nfail_silent = true\n";
    result = flux_config_from_toml(unknown, strlen(unknown), "app.toml", &config);
    expect("an unknown key", result, FLUX_RESULT_CONFIG, "app.toml:2: flux.fail_silent: unknown key");
    check("no config on failure", config == NULL);
}

/* A store and limiter of 10 per 10 s on `toml`'s configuration. */
static int open_limiter(const char *toml, flux_config **config, flux_store **store,
                        flux_limiter **limiter) {
    flux_limit_params params;
    memset(&params, 0, sizeof params);
    params.set = FLUX_PARAM_REQUESTS | FLUX_PARAM_PERIOD;
    params.requests = 10;
    params.period = 10.0;
    if (flux_config_from_toml(toml, strlen(toml), NULL, config) != FLUX_RESULT_OK ||
        flux_store_new(*config, store) != FLUX_RESULT_OK ||
        flux_limiter_new(*store, *config, "errors", NULL, &params, limiter) != FLUX_RESULT_OK) {
        fprintf(stderr, "setting up %s failed: %s\n", toml, last_error());
        failures++;
        return -1;
    }
    return 0;
}

static void close_limiter(flux_config *config, flux_store *store, flux_limiter *limiter) {
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

static const uint8_t KEY[] = "10.0.0.1";

static void cost_zero(void) {
    static const char toml[] = "[flux]\nstorage = \"memory\"\n";
    flux_config *config = NULL;
    flux_store *store = NULL;
    flux_limiter *limiter = NULL;
    if (open_limiter(toml, &config, &store, &limiter) == 0) {
        flux_decision decision = {.limit = 42};
        flux_result result = flux_limiter_decide(limiter, KEY, sizeof KEY - 1, 0, &decision);
        expect("cost 0", result, FLUX_RESULT_INVALID_COST, "cost must be at least 1, got 0");
        check("no decision on failure", decision.limit == 42);
        result = flux_limiter_decide(limiter, KEY, sizeof KEY - 1, 11, &decision);
        expect("cost 11", result, FLUX_RESULT_INVALID_COST,
               "cost 11 can never be admitted: the limit holds at most 10 at once");
    }
    close_limiter(config, store, limiter);
}

struct log_seen {
    int records;
    char first[1024];
};

static void on_log(void *user_data, flux_log_level level, const char *message) {
    struct log_seen *seen = user_data;
    (void)level;
    if (seen->records++ == 0) {
        snprintf(seen->first, sizeof seen->first, "%s", message);
    }
}

struct async_outcome {
    int calls;
    flux_result result;
    char message[1024];
};

static void on_decision(void *user_data, flux_result result, const flux_decision *decision,
                        const char *message) {
    struct async_outcome *outcome = user_data;
    (void)decision;
    outcome->calls++;
    outcome->result = result;
    snprintf(outcome->message, sizeof outcome->message, "%s", message ? message : "");
}

static void redis_down(int port) {
    char toml[256];
    flux_config *config = NULL;
    flux_store *store = NULL;
    flux_limiter *limiter = NULL;

    /* fail_silently = false: the call fails, on either path, saying why. */
    snprintf(toml, sizeof toml,
             "[redis]\nurl = \"redis://127.0.0.1:%d\"\ntimeout_ms = 200\n"
             "[flux]\nfail_silently = false\n",
             port);
    if (open_limiter(toml, &config, &store, &limiter) == 0) {
        flux_decision decision = {.limit = 42};
        flux_result result = flux_limiter_decide(limiter, KEY, sizeof KEY - 1, 1, &decision);
        expect("Redis down, fail_silently = false", result, FLUX_RESULT_STORAGE,
               "Redis is unreachable: Connection refused");
        check("no decision on failure", decision.limit == 42);
        struct async_outcome outcome = {0};
        result = flux_limiter_decide_async(limiter, KEY, sizeof KEY - 1, 1, on_decision, &outcome);
        check("the async call is accepted", result == FLUX_RESULT_OK);
        /* Freeing the store waits for its pending callbacks. */
        close_limiter(config, store, limiter);
        config = NULL, store = NULL, limiter = NULL;
        check("one async callback", outcome.calls == 1);
        check("the async call fails", outcome.result == FLUX_RESULT_STORAGE);
        check("the async message says why",
              strncmp(outcome.message, "Redis is unreachable: Connection refused", 40) == 0);
        printf("Redis down, async: %s\n", outcome.message);
    }
    close_limiter(config, store, limiter);

    /* fail_silently = true: admitted, and said once in the log. */
    struct log_seen seen = {0};
    check("a log callback", flux_set_log_callback(on_log, &seen) == FLUX_RESULT_OK);
    snprintf(toml, sizeof toml,
             "[redis]\nurl = \"redis://127.0.0.1:%d\"\ntimeout_ms = 200\n"
             "[flux]\nfail_silently = true\n",
             port);
    if (open_limiter(toml, &config, &store, &limiter) == 0) {
        for (int call = 0; call < 3; call++) {
            flux_decision decision;
            flux_result result = flux_limiter_decide(limiter, KEY, sizeof KEY - 1, 1, &decision);
            check("Redis down, fail_silently = true: admitted",
                  result == FLUX_RESULT_OK && decision.allowed &&
                      decision.source == FLUX_SOURCE_FAIL_OPEN && decision.remaining == 10);
        }
    }
    close_limiter(config, store, limiter);
    check("unset the log callback", flux_set_log_callback(NULL, NULL) == FLUX_RESULT_OK);
    char said[128];
    snprintf(said, sizeof said, "Redis at redis://127.0.0.1:%d failed: Redis is unreachable: ",
             port);
    check("one warning for three calls failing open", seen.records == 1);
    check("the warning says what failed", strncmp(seen.first, said, strlen(said)) == 0);
    printf("Redis down, fail_silently = true: %s\n", seen.first);
}

int main(void) {
    int fd = -1;
    int port = dead_port(&fd);
    if (port < 0) {
        return 1;
    }
    bad_toml();
    cost_zero();
    redis_down(port);
    close(fd);
    if (failures > 0) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("every error read as expected\n");
    return 0;
}
