//! Real TCP through the router: two smoltcp hosts on different networks, on MemPorts, virtual clock.

use dataplane::buffer::NANOS_PER_SEC;
use dataplane::simhost::{exchange, SimHost};
use dataplane::testbed::Testbed;
use dataplane::wire::MacAddr;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, Ipv4Address};
use std::net::Ipv4Addr;

const CONFIG: &str = r#"
[[network]]
name = "red"
subnet = "10.0.1.0/24"
gateway = "10.0.1.1"

[[network]]
name = "blue"
subnet = "10.0.2.0/24"
gateway = "10.0.2.1"

[[port]]
name = "r1"
kind = "mem"
network = "red"

[[port]]
name = "b1"
kind = "mem"
network = "blue"
"#;

fn socket() -> tcp::Socket<'static> {
    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]))
}

#[test]
fn tcp_transfer_between_networks_through_the_router() {
    let mut tb = Testbed::new(CONFIG).unwrap();
    let mut client = SimHost::new(
        "r1",
        MacAddr([2, 0, 0, 0, 1, 10]),
        Ipv4Addr::new(10, 0, 1, 10),
        24,
        Some(Ipv4Addr::new(10, 0, 1, 1)),
        0,
    );
    let mut server = SimHost::new(
        "b1",
        MacAddr([2, 0, 0, 0, 2, 20]),
        Ipv4Addr::new(10, 0, 2, 20),
        24,
        Some(Ipv4Addr::new(10, 0, 2, 1)),
        0,
    );
    let srv = server.sockets.add(socket());
    server.sockets.get_mut::<tcp::Socket>(srv).listen(8080).unwrap();
    let cli = client.sockets.add(socket());
    let remote = (IpAddress::Ipv4(Ipv4Address::new(10, 0, 2, 20)), 8080);
    client.sockets.get_mut::<tcp::Socket>(cli).connect(client.iface.context(), remote, 40000).unwrap();

    const UPLOAD: usize = 300_000;
    const REPLY: &[u8] = b"received everything, thanks";
    let (mut sent, mut received, mut replied, mut got_reply) = (0usize, 0usize, false, Vec::new());
    let payload: Vec<u8> = (0..UPLOAD).map(|i| (i % 251) as u8).collect();
    let mut checksum_ok = true;
    for _ in 0..200_000 {
        exchange(&mut tb, &mut [&mut client, &mut server]);
        {
            let s = client.sockets.get_mut::<tcp::Socket>(cli);
            if s.can_send() && sent < UPLOAD {
                sent += s.send_slice(&payload[sent..]).unwrap();
            }
            if s.can_recv() {
                s.recv(|d| {
                    got_reply.extend_from_slice(d);
                    (d.len(), ())
                })
                .unwrap();
            }
        }
        {
            let s = server.sockets.get_mut::<tcp::Socket>(srv);
            if s.can_recv() {
                s.recv(|d| {
                    checksum_ok &= d.iter().enumerate().all(|(i, b)| *b == ((received + i) % 251) as u8);
                    received += d.len();
                    (d.len(), ())
                })
                .unwrap();
            }
            if received == UPLOAD && !replied && s.can_send() {
                s.send_slice(REPLY).unwrap();
                s.close();
                replied = true;
            }
        }
        if got_reply.len() == REPLY.len() {
            break;
        }
        tb.advance(NANOS_PER_SEC / 1000);
    }
    assert_eq!(received, UPLOAD, "server received the whole upload");
    assert!(checksum_ok, "bytes arrived intact and in order");
    assert_eq!(got_reply, REPLY, "client received the reply");
    let r = tb.switch().router().stats();
    assert!(r.forwarded > 200, "every segment was routed: {r:?}");
    assert_eq!(tb.switch().counters().total_drops(), 0, "{:?}", tb.switch().counters().drops_by_name());
}
