//! Keeping a signal storm's run time proportional to its size.

/// Caps this process's queue of pending real-time signals
/// (`RLIMIT_SIGPENDING`, checked against the receiver's limit) until
/// dropped. The kernel scans that queue linearly on every delivery, so a
/// queue of ~10^5 (the default limit on a large machine) makes each
/// delivery cost O(queue) and a storm on a loaded machine take minutes;
/// with a cap, a sender that gets ahead sees EAGAIN and retries.
pub struct CapSignalQueue(libc::rlimit);

impl CapSignalQueue {
    pub fn new(cap: u64) -> CapSignalQueue {
        // SAFETY: getrlimit/setrlimit with valid structs; lowering a soft
        // limit is always allowed.
        unsafe {
            let mut old: libc::rlimit = std::mem::zeroed();
            assert_eq!(libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut old), 0);
            let new = libc::rlimit {
                rlim_cur: cap.min(old.rlim_cur),
                rlim_max: old.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_SIGPENDING, &new), 0);
            CapSignalQueue(old)
        }
    }
}

impl Drop for CapSignalQueue {
    fn drop(&mut self) {
        // SAFETY: restoring the limits getrlimit gave us.
        unsafe { libc::setrlimit(libc::RLIMIT_SIGPENDING, &self.0) };
    }
}
