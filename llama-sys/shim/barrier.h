// The exception barrier shared by every shim file: LLAMA_RS_BARRIER(on_throw, body) runs `body`
// (which returns on success); if it throws, it records the message for
// `llama_rs_take_exception` (shim.cpp) and returns `on_throw`.

#pragma once

#include <exception>

namespace llama_rs {
// Stores `what` in this thread's exception slot; defined in shim.cpp.
void record(const char * what) noexcept;
}  // namespace llama_rs

#define LLAMA_RS_BARRIER(on_throw, body)              \
    try {                                             \
        body                                          \
    } catch (const std::exception & e) {              \
        llama_rs::record(e.what());                   \
        return on_throw;                              \
    } catch (...) {                                   \
        llama_rs::record("unknown C++ exception");    \
        return on_throw;                              \
    }
