// flux.hpp: a thin C++17 wrapper over flux.h, written for the example beside it.
//
// Each handle is owned by a move-only class that frees it once; a result other
// than FLUX_RESULT_OK becomes a flux::Error with the code and the calling
// thread's flux_last_error message; keys are std::string_view. Each method is
// one call of the C ABI, so what flux.h says about ownership and threads holds
// unchanged. It is not part of Flux's API: copy it into a project and extend it
// there.
#ifndef FLUX_EXAMPLE_FLUX_HPP
#define FLUX_EXAMPLE_FLUX_HPP

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include <flux.h>

namespace flux {

// A call of the C ABI failed: code() is the flux_result it returned, what()
// the message it left for the calling thread.
class Error : public std::runtime_error {
public:
    Error(flux_result code, const std::string &message)
        : std::runtime_error(message), code_(code) {}

    flux_result code() const noexcept { return code_; }

private:
    flux_result code_;
};

namespace detail {

// The calling thread's last error: asked for its length, then copied whole.
inline std::string last_error() {
    std::string message(flux_last_error(nullptr, 0) + 1, '\0');
    message.resize(flux_last_error(message.data(), message.size()));
    return message;
}

inline void check(flux_result result) {
    if (result != FLUX_RESULT_OK) {
        throw Error(result, last_error());
    }
}

template <auto Free>
struct Deleter {
    template <typename T>
    void operator()(T *handle) const noexcept {
        Free(handle);
    }
};

// A handle freed by `Free` when its owner goes; moving it moves the ownership.
template <typename T, auto Free>
using Owned = std::unique_ptr<T, Deleter<Free>>;

}  // namespace detail

// A validated configuration; may be freed while stores and limiters made from
// it live. Read-only, so any number of threads may share one.
class Config {
public:
    // No flux.toml: the memory store, limits per process.
    static Config defaults() {
        flux_config *config = nullptr;
        detail::check(flux_config_default(&config));
        return Config(config);
    }

    // $FLUX_CONFIG, ./flux.toml, ./config/flux.toml, else the defaults.
    static Config discover() {
        flux_config *config = nullptr;
        detail::check(flux_config_discover(&config));
        return Config(config);
    }

    // flux.toml text; `origin` names it in error messages.
    static Config from_toml(std::string_view toml, const char *origin = nullptr) {
        flux_config *config = nullptr;
        detail::check(flux_config_from_toml(toml.data(), toml.size(), origin, &config));
        return Config(config);
    }

    const flux_config *get() const noexcept { return handle_.get(); }

private:
    explicit Config(flux_config *handle) : handle_(handle) {}

    detail::Owned<flux_config, flux_config_free> handle_;
};

// The store the configuration chooses (memory or Redis). Thread-safe; its
// limiters keep it alive, so it may go before them.
class Store {
public:
    explicit Store(const Config &config) : handle_(make(config)) {}

    const flux_store *get() const noexcept { return handle_.get(); }

private:
    static flux_store *make(const Config &config) {
        flux_store *store = nullptr;
        detail::check(flux_store_new(config.get(), &store));
        return store;
    }

    detail::Owned<flux_store, flux_store_free> handle_;
};

// One limit applied per key within `scope`. Thread-safe: decide() may run on
// any number of threads at once.
class Limiter {
public:
    // The limit [rate_limits.<name>] of `config` ([rate_limit] when `name` is
    // null), with the fields set in `params` (may be null) replacing it.
    Limiter(const Store &store, const Config &config, const std::string &scope,
            const char *name = nullptr, const flux_limit_params *params = nullptr)
        : handle_(make(store, config, scope, name, params)) {}

    // Decides one call of `cost` for the caller `key` (any bytes). A refusal
    // is a decision (allowed false), not an error.
    flux_decision decide(std::string_view key, std::uint64_t cost = 1) const {
        flux_decision decision;
        detail::check(flux_limiter_decide(handle_.get(),
                                          reinterpret_cast<const std::uint8_t *>(key.data()),
                                          key.size(), cost, &decision));
        return decision;
    }

private:
    static flux_limiter *make(const Store &store, const Config &config, const std::string &scope,
                              const char *name, const flux_limit_params *params) {
        flux_limiter *limiter = nullptr;
        detail::check(
            flux_limiter_new(store.get(), config.get(), scope.c_str(), name, params, &limiter));
        return limiter;
    }

    detail::Owned<flux_limiter, flux_limiter_free> handle_;
};

// The version of the library this program runs against (FLUX_VERSION_STRING
// is the one it was compiled against).
inline std::string_view version() noexcept { return flux_version(); }

}  // namespace flux

#endif  // FLUX_EXAMPLE_FLUX_HPP
