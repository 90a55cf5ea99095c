//! Regression (found by `api_fuzz`): two operations of the same class waiting behind a dropped
//! operation that is still finishing. The slot has one waker, so the second waiter used to
//! replace the first one's waker: the first was never woken and its task hung. Now the second
//! is refused with `InvalidState`, as a second concurrent operation always is, and the first
//! is woken when the slot is free; an operation arriving after the slot freed but before the
//! woken waiter's next poll is refused too, instead of taking the slot from it.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use wsk_executor::block_on;
use wsk_host::faults::{Completion, Faults};
use wsk_net::{ErrorKind, TcpListener};

mod common;
use common::{BOUND, run_plans};

/// A waker that records that it was woken.
#[derive(Default)]
struct Flag {
    woken: Mutex<bool>,
    changed: Condvar,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

impl Flag {
    /// Waits at most `BOUND` for a wake.
    fn wait(&self) -> bool {
        let woken = self.woken.lock().unwrap();
        let (woken, _) = self
            .changed
            .wait_timeout_while(woken, BOUND, |woken| !*woken)
            .unwrap();
        *woken
    }
}

fn poll_with<F: Future>(future: std::pin::Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

#[test]
fn a_second_waiter_behind_a_finishing_operation_is_refused_and_the_first_is_woken() {
    // Deferred completion: the dropped operation's cancellation completes later, on a DPC,
    // so the slot is still finishing when the next operations arrive.
    run_plans(vec![Faults::with(Completion::Deferred, 51)], |client, _| {
        let listener =
            block_on(TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())).expect("bind");
        let addr = block_on(listener.local_addr()).expect("local_addr");
        let noop = Waker::noop();
        for _ in 0..20 {
            // An accept dropped as its connection arrives: its completion, delivered later,
            // still has to close the connection nobody took.
            let abandoned_peer = std::net::TcpStream::connect(addr).expect("connect");
            {
                let mut dropped = pin!(listener.accept());
                if let Poll::Ready(accepted) = poll_with(dropped.as_mut(), noop) {
                    block_on(accepted.expect("accept").0.close());
                }
            }
            let first_flag = Arc::new(Flag::default());
            let first_waker = Waker::from(first_flag.clone());
            let mut first = pin!(listener.accept());
            if poll_with(first.as_mut(), &first_waker).is_pending() {
                // The first waits (for the slot, or for a connection); a second is refused.
                let mut second = pin!(listener.accept());
                match poll_with(second.as_mut(), noop) {
                    Poll::Ready(Err(e)) => assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}"),
                    Poll::Ready(Ok(_)) => panic!("the second accept got a connection"),
                    Poll::Pending => panic!("the second accept waits beside the first"),
                }
            }
            // The first one is woken when the slot is free, then accepts a connection.
            let peer = std::net::TcpStream::connect(addr).expect("connect");
            let (stream, _) = loop {
                match poll_with(first.as_mut(), &first_waker) {
                    Poll::Ready(accepted) => break accepted.expect("accept"),
                    Poll::Pending => {
                        assert!(first_flag.wait(), "the first accept was never woken");
                        *first_flag.woken.lock().unwrap() = false;
                        // Woken, not polled yet: whether the slot is free now or the first
                        // accept owns it, a new accept must not take it.
                        let mut late = pin!(listener.accept());
                        match poll_with(late.as_mut(), noop) {
                            Poll::Ready(Err(e)) => {
                                assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
                            }
                            Poll::Ready(Ok(_)) => panic!("a late accept took the connection"),
                            Poll::Pending => panic!("a late accept took the slot from the first"),
                        }
                    }
                }
            };
            block_on(stream.close());
            drop((peer, abandoned_peer));
        }
        block_on(listener.close());
    });
}
