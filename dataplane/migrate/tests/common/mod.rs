//! Test support shared by the migration tests: two plain-TCP movers that send to each
//! other and a connected control connection, all on loopback.

use std::net::{SocketAddr, TcpListener, TcpStream};

use dwcp_migrate::TcpMover;

/// The source's and the destination's movers and ends of the control connection.
pub struct Pair {
    pub src_mover: TcpMover,
    pub dst_mover: TcpMover,
    pub ctl_src: TcpStream,
    pub ctl_dst: TcpStream,
}

/// Movers and control connection on fresh loopback ports.
pub fn pair() -> Pair {
    let l_src = TcpListener::bind("127.0.0.1:0").unwrap();
    let l_dst = TcpListener::bind("127.0.0.1:0").unwrap();
    let a_src: SocketAddr = l_src.local_addr().unwrap();
    let a_dst: SocketAddr = l_dst.local_addr().unwrap();
    let ctl_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ctl_src = TcpStream::connect(ctl_l.local_addr().unwrap()).unwrap();
    let (ctl_dst, _) = ctl_l.accept().unwrap();
    Pair {
        src_mover: TcpMover::new(l_src, a_dst),
        dst_mover: TcpMover::new(l_dst, a_src),
        ctl_src,
        ctl_dst,
    }
}
