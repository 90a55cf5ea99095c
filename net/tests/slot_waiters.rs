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

use std::io::Write;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use wsk_executor::block_on;
use wsk_host::faults::{Completion, Faults};
use wsk_net::{ErrorKind, IoBuf, TcpStream};

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
    // so the slot is still finishing when the next operations arrive. (Receives on one
    // stream: accepts used to be the example, but each accept now has its own IRP.)
    run_plans(vec![Faults::with(Completion::Deferred, 51)], |client, _| {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_listener.local_addr().expect("local_addr");
        let stream = block_on(TcpStream::connect(client, addr)).expect("connect");
        let (mut peer, _) = std_listener.accept().expect("accept");
        peer.set_write_timeout(Some(BOUND)).expect("bound");
        let noop = Waker::noop();
        let buf = || IoBuf::with_capacity(64).expect("buffer");
        for round in 0..20u8 {
            // A receive dropped while at WSK: its cancellation, delivered later, still has
            // to finish the slot.
            {
                let mut dropped = pin!(stream.recv(buf()));
                assert!(
                    poll_with(dropped.as_mut(), noop).is_pending(),
                    "no data yet"
                );
            }
            let first_flag = Arc::new(Flag::default());
            let first_waker = Waker::from(first_flag.clone());
            let mut first = pin!(stream.recv(buf()));
            if poll_with(first.as_mut(), &first_waker).is_pending() {
                // The first waits (for the slot, or for data); a second is refused.
                let mut second = pin!(stream.recv(buf()));
                match poll_with(second.as_mut(), noop) {
                    Poll::Ready((Err(e), _)) => {
                        assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
                    }
                    Poll::Ready((Ok(n), _)) => panic!("the second receive got {n} bytes"),
                    Poll::Pending => panic!("the second receive waits beside the first"),
                }
            }
            // The first one is woken when the slot is free, then receives the data.
            peer.write_all(&[round]).expect("the peer writes");
            let (received, got) = loop {
                match poll_with(first.as_mut(), &first_waker) {
                    Poll::Ready(done) => break done,
                    Poll::Pending => {
                        assert!(first_flag.wait(), "the first receive was never woken");
                        *first_flag.woken.lock().unwrap() = false;
                        // Woken, not polled yet: whether the slot is free now or the first
                        // receive owns it, a new receive must not take it.
                        let mut late = pin!(stream.recv(buf()));
                        match poll_with(late.as_mut(), noop) {
                            Poll::Ready((Err(e), _)) => {
                                assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
                            }
                            Poll::Ready((Ok(n), _)) => panic!("a late receive took {n} bytes"),
                            Poll::Pending => panic!("a late receive took the slot from the first"),
                        }
                    }
                }
            };
            assert_eq!(received.expect("recv"), 1);
            assert_eq!(got[0], round, "the first receive got this round's byte");
        }
        block_on(stream.close());
        drop(peer);
    });
}
