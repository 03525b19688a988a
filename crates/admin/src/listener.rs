//! The admin listener with a cap on connections and on their lifetime.
//!
//! `axum::serve` accepts as many connections as arrive and keeps an idle one
//! open as long as the client likes; on an SBC's management address that is
//! a way to exhaust descriptors. Here each accepted connection holds one of
//! [`crate::MAX_CONNECTIONS`] permits until it closes (the next one waits in
//! the kernel's backlog), and reads fail once the connection is older than
//! [`crate::CONNECTION_LIFETIME`], which closes it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

#[derive(Debug)]
pub(crate) struct Capped {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    lifetime: Duration,
}

impl Capped {
    pub(crate) fn new(inner: TcpListener, max: usize, lifetime: Duration) -> Self {
        Capped {
            inner,
            permits: Arc::new(Semaphore::new(max)),
            lifetime,
        }
    }
}

/// An accepted connection: the stream, its permit, its deadline.
#[derive(Debug)]
pub(crate) struct CappedIo {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<Sleep>>,
}

impl axum::serve::Listener for Capped {
    type Io = CappedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so this only waits.
        let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
            return std::future::pending().await;
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let io = CappedIo {
                        stream,
                        _permit: permit,
                        deadline: Box::pin(tokio::time::sleep(self.lifetime)),
                    };
                    return (io, addr);
                }
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for CappedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "admin connection lifetime exceeded",
            )));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
