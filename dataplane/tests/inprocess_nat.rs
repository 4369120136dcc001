//! Real TCP and UDP through NAT: smoltcp hosts on MemPorts, virtual clock.
//!
//! A container (172.17.0.2) sits on a masquerade network; the uplink is a routed port (203.0.113.2/24) whose
//! default route goes via 203.0.113.1. The host on the uplink plays the upstream router and the external host
//! at once: it owns 203.0.113.1 (so it answers the switch's ARP for the next hop) and 198.51.100.7 (the external
//! address the container talks to, reached only through that next hop). smoltcp does not forward, so one stack
//! holding both addresses is the simplest real "server behind the upstream router".
//!
//! Every exchange below needs both translations: the container's packets must leave from 203.0.113.2 (the
//! external host only answers what it sees, and checks it), and the answers addressed to 203.0.113.2 must be
//! translated back to the container (or, for the published port, the container's answers must leave from
//! 203.0.113.2:8080) — with a broken reply translation the handshake never completes and no byte arrives.

use dataplane::buffer::NANOS_PER_SEC;
use dataplane::conntrack::{NatKind, ProtoState, TcpState};
use dataplane::simhost::{exchange, SimHost};
use dataplane::testbed::Testbed;
use dataplane::wire::MacAddr;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use std::net::Ipv4Addr;

const CONFIG: &str = r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"
masquerade = true

[[port]]
name = "c1"
kind = "mem"
network = "bridge"

[[port]]
name = "up"
kind = "mem"
address = "203.0.113.2/24"

[[route]]
prefix = "0.0.0.0/0"
via = "203.0.113.1"

[[publish]]
port = "up"
proto = "tcp"
external_port = 8080
to = "172.17.0.2:80"
"#;

const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// Bytes each side sends in a TCP transfer.
const TRANSFER: usize = 300_000;

fn v4(a: Ipv4Addr) -> IpAddress {
    let o = a.octets();
    IpAddress::Ipv4(Ipv4Address::new(o[0], o[1], o[2], o[3]))
}

/// The container, and the upstream router / external host (see the module documentation).
fn hosts() -> (Testbed, SimHost, SimHost) {
    let tb = Testbed::new(CONFIG).expect("test config is valid");
    let container =
        SimHost::new("c1", MacAddr([2, 0, 0, 0, 1, 2]), CONTAINER, 16, Some(Ipv4Addr::new(172, 17, 0, 1)), 0);
    let mut external = SimHost::new("up", MacAddr([2, 0, 0, 0, 9, 1]), UPSTREAM, 24, None, 0);
    external.iface.update_ip_addrs(|addrs| {
        addrs.push(IpCidr::new(v4(EXTERNAL), 24)).expect("a second address fits");
    });
    (tb, container, external)
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]))
}

/// The byte at offset `i` of what side `side` sends (each side its own pattern, so a mix-up is seen).
fn pattern(side: usize, i: usize) -> u8 {
    if side == 0 {
        (i % 251) as u8
    } else {
        ((i * 7 + 3) % 253) as u8
    }
}

/// What one side of a transfer saw.
#[derive(Debug, Default)]
struct Seen {
    sent: usize,
    received: usize,
    intact: bool,
    /// The peer's address and port while the connection was up.
    peer: Option<IpEndpoint>,
}

/// Runs the hosts until each TCP socket (`a` on host `ha`, `b` on host `hb`) has sent `TRANSFER` bytes of its
/// pattern and received the other's; then both close. Returns what each side saw.
fn transfer(tb: &mut Testbed, ha: &mut SimHost, a: SocketHandle, hb: &mut SimHost, b: SocketHandle) -> [Seen; 2] {
    let payloads: Vec<Vec<u8>> = (0..2).map(|s| (0..TRANSFER).map(|i| pattern(s, i)).collect()).collect();
    let mut seen = [Seen { intact: true, ..Seen::default() }, Seen { intact: true, ..Seen::default() }];
    for _ in 0..400_000 {
        exchange(tb, &mut [&mut *ha, &mut *hb]);
        for (side, (host, handle)) in [(&mut *ha, a), (&mut *hb, b)].into_iter().enumerate() {
            let s = host.sockets.get_mut::<tcp::Socket>(handle);
            let me = &mut seen[side];
            if s.state() == tcp::State::Established {
                me.peer = s.remote_endpoint();
            }
            if s.can_send() && me.sent < TRANSFER {
                me.sent += s.send_slice(&payloads[side][me.sent..]).expect("the socket can send");
            }
            if s.can_recv() {
                let received = &mut me.received;
                let intact = &mut me.intact;
                s.recv(|d| {
                    *intact &= d.iter().enumerate().all(|(i, b)| *b == pattern(1 - side, *received + i));
                    *received += d.len();
                    (d.len(), ())
                })
                .expect("the socket can receive");
            }
        }
        if seen.iter().all(|s| s.received >= TRANSFER && s.sent == TRANSFER) {
            break;
        }
        tb.advance(NANOS_PER_SEC / 1000);
    }
    ha.sockets.get_mut::<tcp::Socket>(a).close();
    hb.sockets.get_mut::<tcp::Socket>(b).close();
    for _ in 0..200 {
        exchange(tb, &mut [&mut *ha, &mut *hb]);
        tb.advance(NANOS_PER_SEC / 1000);
    }
    seen
}

#[track_caller]
fn assert_transferred(seen: &[Seen; 2]) {
    for (side, s) in seen.iter().enumerate() {
        assert_eq!(s.sent, TRANSFER, "side {side} sent everything");
        assert_eq!(s.received, TRANSFER, "side {side} received everything");
        assert!(s.intact, "side {side}: bytes arrived intact and in order");
    }
}

#[test]
fn container_tcp_transfer_through_masquerade_comes_from_the_uplink_address() {
    let (mut tb, mut container, mut external) = hosts();
    let server = external.sockets.add(tcp_socket());
    external.sockets.get_mut::<tcp::Socket>(server).listen(9000).expect("listen");
    let client = container.sockets.add(tcp_socket());
    container
        .sockets
        .get_mut::<tcp::Socket>(client)
        .connect(container.iface.context(), (v4(EXTERNAL), 9000), 40000)
        .expect("connect");

    let seen = transfer(&mut tb, &mut container, client, &mut external, server);
    assert_transferred(&seen);
    let [c, e] = seen;
    assert_eq!(c.peer, Some(IpEndpoint::new(v4(EXTERNAL), 9000)), "the container talked to the external address");
    let e_peer = e.peer.expect("the external host saw a peer");
    assert_eq!(e_peer.addr, v4(UPLINK), "the external host saw the uplink address, not the container's");
    assert_eq!(e_peer.port, 40000, "the source port was free, so it was kept");

    let conns = tb.switch().connections(tb.now());
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].nat, Some(NatKind::Snat));
    assert_eq!((conns[0].orig.src, conns[0].orig.dst, conns[0].reply.dst), (CONTAINER, EXTERNAL, UPLINK));
    assert!(
        matches!(conns[0].state, ProtoState::Tcp(TcpState::TimeWait | TcpState::LastAck | TcpState::FinWait)),
        "closed by both sides: {:?}",
        conns[0].state
    );
    let s = tb.switch().nat_stats();
    assert!(s.hits_original > 200 && s.hits_reply > 200, "both directions translated: {s:?}");
    assert_eq!(tb.switch().counters().total_drops(), 0, "{:?}", tb.switch().counters().drops_by_name());
    tb.switch().router().nat().check_invariants().expect("NAT invariants");
}

#[test]
fn external_host_reaches_a_published_port_both_ways() {
    let (mut tb, mut container, mut external) = hosts();
    let server = container.sockets.add(tcp_socket());
    container.sockets.get_mut::<tcp::Socket>(server).listen(80).expect("listen");
    let client = external.sockets.add(tcp_socket());
    external
        .sockets
        .get_mut::<tcp::Socket>(client)
        .connect(external.iface.context(), (v4(UPLINK), 8080), (v4(EXTERNAL), 50000))
        .expect("connect");

    let seen = transfer(&mut tb, &mut external, client, &mut container, server);
    assert_transferred(&seen);
    let [e, c] = seen;
    assert_eq!(e.peer, Some(IpEndpoint::new(v4(UPLINK), 8080)), "the external host talked to the published port");
    let c_peer = c.peer.expect("the container saw a peer");
    assert_eq!(c_peer, IpEndpoint::new(v4(EXTERNAL), 50000), "the client's address is kept (no source NAT)");

    let conns = tb.switch().connections(tb.now());
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].nat, Some(NatKind::Dnat));
    assert_eq!((conns[0].orig.dst, conns[0].orig.dport, conns[0].reply.src), (UPLINK, 8080, CONTAINER));
    assert_eq!(tb.switch().nat_stats().dnat_created, 1);
    assert_eq!(tb.switch().counters().total_drops(), 0, "{:?}", tb.switch().counters().drops_by_name());
    tb.switch().router().nat().check_invariants().expect("NAT invariants");
}

fn udp_socket() -> udp::Socket<'static> {
    let buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]);
    udp::Socket::new(buf(), buf())
}

#[test]
fn container_udp_exchange_through_masquerade() {
    let (mut tb, mut container, mut external) = hosts();
    let echo = external.sockets.add(udp_socket());
    // Bound to the external address: unbound, smoltcp would answer from 203.0.113.1 (the address on the
    // uplink's subnet), which is not the address the container wrote to, and NAT rightly would not match it.
    external.sockets.get_mut::<udp::Socket>(echo).bind((v4(EXTERNAL), 7000)).expect("bind");
    let client = container.sockets.add(udp_socket());
    container.sockets.get_mut::<udp::Socket>(client).bind(5353).expect("bind");

    const DATAGRAMS: usize = 20;
    let (mut sent, mut echoed, mut answers) = (0usize, 0usize, Vec::new());
    let mut buf = vec![0u8; 2048];
    for _ in 0..5_000 {
        {
            let s = container.sockets.get_mut::<udp::Socket>(client);
            if sent < DATAGRAMS && s.can_send() {
                let msg = format!("datagram {sent}").into_bytes();
                s.send_slice(&msg, (v4(EXTERNAL), 7000)).expect("send");
                sent += 1;
            }
        }
        exchange(&mut tb, &mut [&mut container, &mut external]);
        {
            let s = external.sockets.get_mut::<udp::Socket>(echo);
            while let Ok((n, meta)) = s.recv_slice(&mut buf) {
                // The echo server sees the uplink address and the container's (kept) port.
                assert_eq!(meta.endpoint, IpEndpoint::new(v4(UPLINK), 5353), "masqueraded source");
                let mut reply = b"echo: ".to_vec();
                reply.extend_from_slice(&buf[..n]);
                s.send_slice(&reply, meta.endpoint).expect("send");
                echoed += 1;
            }
        }
        {
            let s = container.sockets.get_mut::<udp::Socket>(client);
            while let Ok((n, meta)) = s.recv_slice(&mut buf) {
                assert_eq!(meta.endpoint, IpEndpoint::new(v4(EXTERNAL), 7000), "the answer comes from the server");
                answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        if answers.len() == DATAGRAMS {
            break;
        }
        tb.advance(NANOS_PER_SEC / 1000);
    }
    assert_eq!(echoed, DATAGRAMS, "the server got every datagram");
    let expected: Vec<String> = (0..DATAGRAMS).map(|i| format!("echo: datagram {i}")).collect();
    assert_eq!(answers, expected, "the container got every answer, in order");
    let conns = tb.switch().connections(tb.now());
    assert_eq!(conns.len(), 1, "one flow: {conns:?}");
    assert_eq!(conns[0].nat, Some(NatKind::Snat));
    assert_eq!(tb.switch().counters().total_drops(), 0, "{:?}", tb.switch().counters().drops_by_name());
}
