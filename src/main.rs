fn main() -> std::process::ExitCode {
    fixed_mmap_threshold();
    tributary::cli::main()
}

/// glibc's malloc raises its mmap threshold (up to 32 MB) whenever a large block is freed;
/// large buffers (Parquet pages, row builders) then come from its heaps, and the space they
/// leave is kept. Capturing one 512 MB transaction left 226 MB resident with 101 MB in use,
/// and more for larger ones. A fixed threshold, glibc's initial 128 KB, keeps every large
/// block in its own mapping, returned to the system when freed: 183 MB, whatever the
/// transaction's size (tests/large_transactions.rs samples it). A user who tunes glibc's
/// malloc (`GLIBC_TUNABLES`, `MALLOC_MMAP_THRESHOLD_`) keeps their own settings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fixed_mmap_threshold() {
    if ["GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fixed_mmap_threshold() {}
