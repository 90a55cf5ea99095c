//! TCP over WSK, as tokio splits it: [`TcpListener`] with its [`Accept`] future and
//! [`Incoming`] stream in `listener`, and its accept indications ([`AcceptEvents`]) in
//! `accept_events`; [`TcpStream`] with its [`Recv`] future and
//! [`Disconnect`] in `stream`; its halves [`TcpReadHalf`] and [`TcpWriteHalf`] in `split`.
//! All build on the socket handle of `crate::socket` and the operations of `crate::raw`.

mod accept_events;
mod connect;
mod events;
mod listener;
mod mdl;
mod send_backlog;
mod split;
mod stream;
mod transfer;

pub use accept_events::{ACCEPT_QUEUE_DEFAULT, ACCEPT_QUEUE_MAX, AcceptEventCounts, AcceptEvents};
pub(crate) use accept_events::{
    AcceptCell, before_close as before_accept_close, free_cell as free_accept_cell, listen_dispatch,
};
pub(crate) use connect::issue_socket_connect;
pub use events::{BufferSource, EventCounts, Indicated, RETAINED_MAX, RecvEvents, RecvPooled};
pub(crate) use events::{EventCell, before_close, client_dispatch, free_cell};
pub(crate) use listener::issue_accept;
pub use listener::{Accept, Incoming, TcpListener};
pub(crate) use mdl::take_mdl;
pub use send_backlog::SendBacklogChanged;
pub(crate) use split::socket_of;
pub use split::{TcpReadHalf, TcpWriteHalf};
pub use stream::{Disconnect, Recv, SendAll, TcpStream};
pub(crate) use stream::{issue_connect, issue_disconnect, issue_receive, issue_send, take_buf};
pub use transfer::{StreamTransfer, TransferRecv, TransferSend};
