// Decides from several threads through one limiter, with the wrapper in flux.hpp.
//
// 8 threads make 500 calls each for one key under a quota of 1,000 calls a day:
// exactly 1,000 of the 4,000 calls are admitted, however the threads interleave,
// and every refused one is told when to retry. Each thread also makes one call
// the library rejects (a cost of 0), to show that errors, and their messages,
// belong to the thread that made the call.
//
// Doubles as a test: exits non-zero when the library answers otherwise. `make
// test` builds it with -Wall -Wextra -Werror against an installed Flux, linked
// both ways, and runs it under valgrind.
#include <cstdint>
#include <cstdio>
#include <future>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "flux.hpp"

static_assert(!std::is_copy_constructible_v<flux::Limiter> &&
                  std::is_nothrow_move_constructible_v<flux::Limiter>,
              "a handle has one owner: it moves, it is not copied");

namespace {

constexpr int kThreads = 8;
constexpr int kCallsPerThread = 500;
constexpr std::uint64_t kQuota = 1000;

// A fixed window of a day: nothing is given back while the program runs.
constexpr std::string_view kConfig = R"(
[rate_limits.api]
policy = "fixed_window"
requests = 1000
period = 86400
)";

// What one thread saw; each thread writes only its own.
struct Tally {
    int allowed = 0;
    int refused = 0;
    std::string failure;  // empty when every answer was as expected
};

void decide_many(const flux::Limiter &limiter, std::shared_future<void> start, Tally &tally) {
    start.wait();
    try {
        limiter.decide("client-1", 0);
        tally.failure = "a cost of 0 was accepted";
        return;
    } catch (const flux::Error &error) {
        if (error.code() != FLUX_RESULT_INVALID_COST ||
            std::string_view(error.what()).find("cost") == std::string_view::npos) {
            tally.failure = "a cost of 0 gave " + std::to_string(error.code()) + ": " + error.what();
            return;
        }
    }
    try {
        for (int call = 0; call < kCallsPerThread; call++) {
            flux_decision decision = limiter.decide("client-1");
            if (decision.allowed) {
                tally.allowed++;
            } else if (decision.remaining == 0 && decision.retry_after > 0) {
                tally.refused++;
            } else {
                tally.failure = "a refusal without remaining 0 and a retry_after";
                return;
            }
        }
    } catch (const flux::Error &error) {
        tally.failure = error.what();
    }
}

bool bad_params_throw(const flux::Store &store, const flux::Config &config) {
    flux_limit_params params{};
    params.set = FLUX_PARAM_REQUESTS;
    params.requests = 0;
    try {
        flux::Limiter limiter(store, config, "api", "api", &params);
    } catch (const flux::Error &error) {
        std::printf("requests = 0 is refused (%u): %s\n", static_cast<unsigned>(error.code()),
                    error.what());
        return error.code() == FLUX_RESULT_INVALID_LIMIT;
    }
    std::fprintf(stderr, "requests = 0 was accepted\n");
    return false;
}

}  // namespace

int main() {
    std::printf("flux %s (compiled against %s)\n", std::string(flux::version()).c_str(),
                FLUX_VERSION_STRING);
    try {
        const auto config = flux::Config::from_toml(kConfig, "threads.cpp");
        const flux::Store store(config);
        flux::Limiter limiter(store, config, "api", "api");

        // The threads start together, so their calls interleave.
        std::promise<void> go;
        const std::shared_future<void> start = go.get_future().share();
        std::vector<Tally> tallies(kThreads);
        std::vector<std::thread> threads;
        for (Tally &tally : tallies) {
            threads.emplace_back(decide_many, std::cref(limiter), start, std::ref(tally));
        }
        go.set_value();
        for (std::thread &thread : threads) {
            thread.join();
        }

        int allowed = 0;
        int refused = 0;
        for (const Tally &tally : tallies) {
            if (!tally.failure.empty()) {
                std::fprintf(stderr, "a thread failed: %s\n", tally.failure.c_str());
                return 1;
            }
            allowed += tally.allowed;
            refused += tally.refused;
        }
        std::printf("%d threads x %d calls under a quota of %llu: %d allowed, %d refused\n",
                    kThreads, kCallsPerThread, static_cast<unsigned long long>(kQuota), allowed,
                    refused);
        if (allowed != static_cast<int>(kQuota) || allowed + refused != kThreads * kCallsPerThread) {
            std::fprintf(stderr, "expected exactly %llu allowed\n",
                         static_cast<unsigned long long>(kQuota));
            return 1;
        }

        // The limit is per key, and moving a limiter keeps its state.
        const flux::Limiter moved = std::move(limiter);
        if (!moved.decide("client-2").allowed || moved.decide("client-1").allowed) {
            std::fprintf(stderr, "expected client-2 allowed and client-1 still refused\n");
            return 1;
        }
        return bad_params_throw(store, config) ? 0 : 1;
    } catch (const flux::Error &error) {
        std::fprintf(stderr, "flux failed (%u): %s\n", static_cast<unsigned>(error.code()),
                     error.what());
        return 1;
    }
}
