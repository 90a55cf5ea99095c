//! TCP over WSK, as tokio splits it: [`TcpListener`] with its [`Accept`] future and
//! [`Incoming`] stream in `listener`; [`TcpStream`] with its [`Recv`] future and
//! [`Disconnect`] in `stream`. Both build on the socket handle of `crate::socket` and the
//! operations of `crate::raw`.

mod listener;
mod stream;

pub(crate) use listener::issue_accept;
pub use listener::{Accept, Incoming, TcpListener};
pub use stream::{Disconnect, Recv, TcpStream};
pub(crate) use stream::{issue_connect, issue_disconnect, issue_receive, issue_send};
