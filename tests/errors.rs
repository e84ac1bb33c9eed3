//! Every public error type is a `core::error::Error`: `?` turns it into a
//! `Box<dyn Error>` (and so into `anyhow::Error`-style types), `source()`
//! is `None` (they wrap nothing), and the message names what went wrong.
//!
//! Before issue 9 this file did not compile: `VectorOutOfRange`,
//! `RegisterError`, `CpuOutOfRange`, `MailboxError` and `TaskletKilled`
//! implemented `Display` only (E0277: `?` could not convert them).

use std::error::Error;

use bottomhalf::{
    Config, CpuOutOfRange, Host, Mailbox, MailboxError, PerCpu, RegisterError, Runtime, Tasklet,
    TaskletKilled, Vector, VectorOutOfRange, Work, Workqueue, WorkqueueError,
};

type BoxResult = Result<(), Box<dyn Error + Send + Sync + 'static>>;

/// Runs `f`, which must fail through `?`, and returns the boxed error's
/// message after checking it is an `E` with no source.
#[track_caller]
fn boxed<E: Error + 'static>(f: impl FnOnce() -> BoxResult) -> String {
    let err = f().expect_err("the set-up call must fail");
    assert!(
        err.downcast_ref::<E>().is_some(),
        "the boxed error is not a {}",
        std::any::type_name::<E>()
    );
    assert!(err.source().is_none());
    err.to_string()
}

#[track_caller]
fn assert_names(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "message {msg:?} does not mention {w:?}");
    }
}

#[test]
fn vector_out_of_range_converts_with_question_mark() {
    let msg = boxed::<VectorOutOfRange>(|| {
        Vector::try_new(40)?;
        Ok(())
    });
    assert_names(&msg, &["vector 40", "out of range"]);
}

#[test]
fn register_error_converts_with_question_mark() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    let msg = boxed::<RegisterError>(|| {
        RT.register(Vector::TASKLET, "mine", |_| {})?;
        Ok(())
    });
    assert_names(&msg, &["vector 6", "reserved"]);
    let msg = boxed::<RegisterError>(|| {
        RT.register(Vector::new(9), "first", |_| {})?;
        RT.register(Vector::new(9), "second", |_| {})?;
        Ok(())
    });
    assert_names(&msg, &["vector 9", "already has a handler"]);
}

#[test]
fn cpu_out_of_range_converts_with_question_mark() {
    let cells: PerCpu<u32, 2> = PerCpu::from_fn(|cpu| cpu as u32);
    let msg = boxed::<CpuOutOfRange>(|| {
        cells.try_get(5)?;
        Ok(())
    });
    assert_names(&msg, &["CPU index 5", "2 CPU"]);
}

#[test]
fn mailbox_error_converts_with_question_mark() {
    let mb: Mailbox<u8, 4> = Mailbox::new();
    let _ends = mb.split().unwrap();
    let msg = boxed::<MailboxError>(|| {
        mb.split()?;
        Ok(())
    });
    assert_names(&msg, &["already split", "one producer"]);
}

#[test]
fn tasklet_killed_converts_with_question_mark() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static T: Tasklet = Tasklet::new(&RT, || {});
    T.kill();
    let msg = boxed::<TaskletKilled>(|| {
        T.try_schedule()?;
        Ok(())
    });
    assert_names(&msg, &["killed", "cannot be scheduled"]);
}

#[test]
fn workqueue_error_converts_with_question_mark() {
    static W: Work = Work::new("w", |_| {});
    let wq = Workqueue::builder("errors").threads(1).build().unwrap();
    wq.stop().unwrap();
    let msg = boxed::<WorkqueueError>(|| {
        wq.try_queue(&W)?;
        Ok(())
    });
    assert_names(&msg, &["stopping"]);
}

#[cfg(target_os = "linux")]
#[test]
fn signal_error_converts_with_question_mark() {
    use bottomhalf::{SignalConfig, SignalError, Signals};
    static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    // Refused before anything is installed: no handler in this binary.
    let msg = boxed::<SignalError>(|| {
        let _h = RT.install(SignalConfig::new(libc::SIGKILL, |_| {}))?;
        Ok(())
    });
    assert_names(&msg, &["SIGKILL", "cannot be caught"]);
}

#[cfg(target_os = "linux")]
#[test]
fn pid_set_error_converts_with_question_mark() {
    use bottomhalf::{PidSet, PidSetError};
    static SET: PidSet<1> = PidSet::new();
    let msg = boxed::<PidSetError>(|| {
        SET.insert(0)?;
        Ok(())
    });
    assert_names(&msg, &["0", "not a process id"]);
    let msg = boxed::<PidSetError>(|| {
        SET.insert(100)?;
        SET.insert(101)?;
        Ok(())
    });
    assert_names(&msg, &["full", "1 process"]);
}

/// The errors are small: a firmware carries them in registers.
#[test]
fn error_types_are_small_and_copy() {
    fn copy<T: Copy + Send + Sync + 'static>() {}
    copy::<VectorOutOfRange>();
    copy::<RegisterError>();
    copy::<CpuOutOfRange>();
    copy::<MailboxError>();
    copy::<TaskletKilled>();
    copy::<WorkqueueError>();
    assert!(std::mem::size_of::<RegisterError>() <= 2);
    assert!(std::mem::size_of::<MailboxError>() <= 1);
    assert_eq!(std::mem::size_of::<TaskletKilled>(), 0);
}
