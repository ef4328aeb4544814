//! Writing two buffers (a head and a body) in one system call when the socket takes both.

use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// Writes `a` then `b`, in one system call when the stream takes both.
pub(crate) async fn write_two<W: AsyncWrite + Unpin>(
    io: &mut W,
    a: &[u8],
    b: &[u8],
) -> std::io::Result<()> {
    let mut a = a;
    let mut b = b;
    while !a.is_empty() {
        let slices = [std::io::IoSlice::new(a), std::io::IoSlice::new(b)];
        let n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    io.write_all(b).await
}
