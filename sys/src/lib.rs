//! oxserve's FFI calls, the one place where `unsafe` is allowed (every other crate of the
//! workspace forbids it).
//!
//! - [`return_free_memory`]: glibc keeps freed heap pages, so after loading a model the RSS still
//!   counts the transient copies ONNX Runtime made while optimising the graph (~100 MiB for
//!   ResNet-18); `malloc_trim` hands them back. Called after model loads, scaling and
//!   unregistering, never on the request path.
//! - [`limit_malloc_arenas`]: fewer glibc arenas, so that loading and unloading models does not
//!   leave memory spread over many of them.
//! - [`defer_to_workers`] / [`compete_normally`]: the HTTP threads (and the photo decoding they
//!   start) run under Linux's `SCHED_BATCH` policy: the same share of CPU time, but a woken HTTP
//!   thread waits for the next tick or an idle core instead of preempting a model's run, so under
//!   load it serves several connections per turn. Model workers reset their own policy (threads
//!   inherit it). Kept on a same-run A/B: +12 % req/s for the digits CNN saturated on the
//!   2-core VM (docs/performance.md, 2026-12-07).

/// Caps glibc's malloc arenas at `arenas` (Linux with glibc; a no-op elsewhere, or when the
/// user set `MALLOC_ARENA_MAX`). glibc gives each new thread its own arena up to 8 per core, and
/// every model load starts new threads, so freed weights end up spread over all of them and
/// register/unregister cycles grow RSS (docs/performance.md). Call before any thread starts.
pub fn limit_malloc_arenas(arenas: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let arenas = libc::c_int::try_from(arenas.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes two integers and changes only the allocator's tuning.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Returns the allocator's free pages to the OS (glibc on Linux; a no-op elsewhere).
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers, is thread-safe (it locks each arena in turn) and
    // only releases pages that hold no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Puts the calling thread under `SCHED_BATCH` (Linux; a no-op elsewhere).
pub fn defer_to_workers() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    return set_policy(libc::SCHED_BATCH);
    #[cfg(not(target_os = "linux"))]
    Ok(())
}

/// Puts the calling thread back under the normal policy.
pub fn compete_normally() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    return set_policy(libc::SCHED_OTHER);
    #[cfg(not(target_os = "linux"))]
    Ok(())
}

#[cfg(target_os = "linux")]
fn set_policy(policy: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 is the calling thread,
    // and the call changes nothing but that thread's scheduling policy.
    match unsafe { libc::sched_setscheduler(0, policy, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}
