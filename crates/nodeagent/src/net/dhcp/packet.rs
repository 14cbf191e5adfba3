//! DHCPv4 messages on the wire (RFC 2131 section 2, RFC 2132 options).
//!
//! [`DhcpMessage::decode`] reads bytes from anyone on the link, so it
//! checks every length before it reads and names what was wrong in a
//! [`PacketDecodeError`]. Options that appear more than once are joined
//! before they are parsed (RFC 3396), which is also how [`DhcpMessage::encode`]
//! writes values longer than 255 bytes. Options the node does not use are
//! skipped. Option overload (52), which moves options into the `sname` and
//! `file` fields, is refused: no server we target needs it for the handful
//! of options we ask for.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// UDP port of DHCP servers.
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;

const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// op, htype, hlen, hops, xid, secs, flags, 4 addresses, chaddr, sname, file.
const FIXED_LEN: usize = 236;
const OPTIONS_START: usize = FIXED_LEN + MAGIC_COOKIE.len();
/// Some relays and servers drop BOOTP messages shorter than this.
const MIN_MESSAGE_LEN: usize = 300;
const BROADCAST_FLAG: u16 = 0x8000;
const HTYPE_ETHERNET: u8 = 1;
const MAC_LEN: u8 = 6;

const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTERS: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_DOMAIN_NAME: u8 = 15;
const OPT_MTU: u8 = 26;
const OPT_NTP: u8 = 42;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_OVERLOAD: u8 = 52;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETER_REQUEST: u8 = 55;
const OPT_MESSAGE: u8 = 56;
const OPT_MAX_MESSAGE_SIZE: u8 = 57;
const OPT_RENEWAL_TIME: u8 = 58;
const OPT_REBINDING_TIME: u8 = 59;
const OPT_CLIENT_ID: u8 = 61;
const OPT_DOMAIN_SEARCH: u8 = 119;
const OPT_CLASSLESS_ROUTES: u8 = 121;
const OPT_END: u8 = 255;

/// The options a client asks for (option 55): everything [`DhcpOptions`]
/// reads from a reply.
pub const REQUESTED_OPTIONS: [u8; 12] = [
    OPT_SUBNET_MASK,
    OPT_ROUTERS,
    OPT_DNS,
    OPT_HOSTNAME,
    OPT_DOMAIN_NAME,
    OPT_MTU,
    OPT_NTP,
    OPT_LEASE_TIME,
    OPT_RENEWAL_TIME,
    OPT_REBINDING_TIME,
    OPT_DOMAIN_SEARCH,
    OPT_CLASSLESS_ROUTES,
];

/// BOOTP operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Client to server.
    Request,
    /// Server to client.
    Reply,
}

/// DHCP message type (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Client looks for servers.
    Discover,
    /// Server offers an address.
    Offer,
    /// Client asks for (or to extend) an address.
    Request,
    /// Client found the address in use.
    Decline,
    /// Server grants the address.
    Ack,
    /// Server refuses the request.
    Nak,
    /// Client gives the address back.
    Release,
    /// Client asks for parameters only.
    Inform,
}

impl MessageType {
    fn code(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
        }
    }

    /// The type for option 53 value `code`, if it is one.
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// One classless static route (option 121, RFC 3442).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClasslessRoute {
    /// Destination network, host bits zero.
    pub destination: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
    /// Next hop; `0.0.0.0` means on-link.
    pub router: Ipv4Addr,
}

/// The options the node sends or reads. An empty list or `None` means the
/// option is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpOptions {
    /// 53.
    pub message_type: Option<MessageType>,
    /// 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// 54.
    pub server_id: Option<Ipv4Addr>,
    /// 55.
    pub parameter_request: Vec<u8>,
    /// 51, seconds; `u32::MAX` means infinite.
    pub lease_time: Option<u32>,
    /// 58 (T1), seconds.
    pub renewal_time: Option<u32>,
    /// 59 (T2), seconds.
    pub rebinding_time: Option<u32>,
    /// 1.
    pub subnet_mask: Option<Ipv4Addr>,
    /// 3.
    pub routers: Vec<Ipv4Addr>,
    /// 6.
    pub dns: Vec<Ipv4Addr>,
    /// 42.
    pub ntp: Vec<Ipv4Addr>,
    /// 12, as sent (trailing NULs some servers add are dropped).
    pub hostname: Option<String>,
    /// 15.
    pub domain_name: Option<String>,
    /// 119, decompressed.
    pub domain_search: Vec<String>,
    /// 26.
    pub mtu: Option<u16>,
    /// 121.
    pub classless_routes: Vec<ClasslessRoute>,
    /// 61.
    pub client_id: Option<Vec<u8>>,
    /// 57.
    pub max_message_size: Option<u16>,
    /// 56: a server's explanation, typically with a NAK.
    pub message: Option<String>,
}

/// A DHCPv4 message. Only Ethernet (htype 1, hlen 6) is supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpMessage {
    /// Direction.
    pub op: Op,
    /// Transaction ID.
    pub xid: u32,
    /// Seconds since the client began this exchange.
    pub secs: u16,
    /// Ask the server to broadcast its reply (we have no address yet).
    pub broadcast: bool,
    /// Client address, when it has one (renewing, releasing).
    pub ciaddr: Ipv4Addr,
    /// "Your" address: what the server offers or grants.
    pub yiaddr: Ipv4Addr,
    /// Next server (boot), unused by the node.
    pub siaddr: Ipv4Addr,
    /// Relay agent.
    pub giaddr: Ipv4Addr,
    /// Client hardware address.
    pub chaddr: [u8; 6],
    /// Options.
    pub options: DhcpOptions,
}

/// Why bytes were not a DHCPv4 message we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketDecodeError {
    /// Shorter than the fixed header and magic cookie.
    #[error("message is {0} bytes, shorter than the {OPTIONS_START}-byte header")]
    TooShort(usize),
    /// Neither BOOTREQUEST nor BOOTREPLY.
    #[error("unknown op code {0}")]
    BadOp(u8),
    /// Not Ethernet.
    #[error("hardware type {htype} with address length {hlen} is not Ethernet")]
    NotEthernet {
        /// htype.
        htype: u8,
        /// hlen.
        hlen: u8,
    },
    /// Plain BOOTP or garbage.
    #[error("magic cookie {0:?} is not DHCP's")]
    BadCookie([u8; 4]),
    /// An option's length runs past the end of the message.
    #[error("option {code} is truncated")]
    TruncatedOption {
        /// Option code.
        code: u8,
    },
    /// No end option.
    #[error("options do not end with option 255")]
    MissingEnd,
    /// An option has a length its type does not allow.
    #[error("option {code} has invalid length {len}")]
    BadOptionLength {
        /// Option code.
        code: u8,
        /// Its (joined) length.
        len: usize,
    },
    /// Option 53 holds an unknown type.
    #[error("unknown DHCP message type {0}")]
    UnknownMessageType(u8),
    /// Option 52 is in use.
    #[error("option overload (52) is not supported")]
    OptionOverload,
    /// A text option is not UTF-8.
    #[error("option {code} is not UTF-8 text")]
    NotText {
        /// Option code.
        code: u8,
    },
    /// A classless route has a prefix longer than 32.
    #[error("classless route with prefix length {0}")]
    BadRoutePrefix(u8),
    /// Option 119 is not a valid compressed name list.
    #[error("domain search list (119) is malformed: {0}")]
    BadDomainSearch(&'static str),
}

fn ipv4_at(bytes: &[u8], at: usize) -> Ipv4Addr {
    let mut octets = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        octets.copy_from_slice(src);
    }
    Ipv4Addr::from(octets)
}

impl DhcpMessage {
    /// Encodes the message, padded to the BOOTP minimum of 300 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_MESSAGE_LEN + 64);
        out.push(match self.op {
            Op::Request => 1,
            Op::Reply => 2,
        });
        out.extend_from_slice(&[HTYPE_ETHERNET, MAC_LEN, 0]);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        let flags = if self.broadcast { BROADCAST_FLAG } else { 0 };
        out.extend_from_slice(&flags.to_be_bytes());
        for addr in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&addr.octets());
        }
        out.extend_from_slice(&self.chaddr);
        // The rest of chaddr (16 bytes), sname (64) and file (128).
        out.resize(FIXED_LEN, 0);
        out.extend_from_slice(&MAGIC_COOKIE);
        self.options.encode_into(&mut out);
        out.push(OPT_END);
        if out.len() < MIN_MESSAGE_LEN {
            out.resize(MIN_MESSAGE_LEN, OPT_PAD);
        }
        out
    }

    /// Decodes a message received from the network.
    pub fn decode(bytes: &[u8]) -> Result<Self, PacketDecodeError> {
        if bytes.len() < OPTIONS_START {
            return Err(PacketDecodeError::TooShort(bytes.len()));
        }
        let op = match bytes[0] {
            1 => Op::Request,
            2 => Op::Reply,
            other => return Err(PacketDecodeError::BadOp(other)),
        };
        let (htype, hlen) = (bytes[1], bytes[2]);
        if htype != HTYPE_ETHERNET || hlen != MAC_LEN {
            return Err(PacketDecodeError::NotEthernet { htype, hlen });
        }
        let cookie = [bytes[236], bytes[237], bytes[238], bytes[239]];
        if cookie != MAGIC_COOKIE {
            return Err(PacketDecodeError::BadCookie(cookie));
        }
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&bytes[28..34]);
        Ok(Self {
            op,
            xid: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            secs: u16::from_be_bytes([bytes[8], bytes[9]]),
            broadcast: u16::from_be_bytes([bytes[10], bytes[11]]) & BROADCAST_FLAG != 0,
            ciaddr: ipv4_at(bytes, 12),
            yiaddr: ipv4_at(bytes, 16),
            siaddr: ipv4_at(bytes, 20),
            giaddr: ipv4_at(bytes, 24),
            chaddr,
            options: DhcpOptions::decode(&bytes[OPTIONS_START..])?,
        })
    }
}

/// Writes one option, split into 255-byte pieces when longer (RFC 3396).
fn put(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    if value.is_empty() {
        out.extend_from_slice(&[code, 0]);
        return;
    }
    for chunk in value.chunks(255) {
        out.push(code);
        out.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(chunk);
    }
}

fn addrs(list: &[Ipv4Addr]) -> Vec<u8> {
    list.iter().flat_map(|a| a.octets()).collect()
}

/// Encodes a domain name list without compression (RFC 1035 3.1).
fn encode_names(names: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            let bytes = &label.as_bytes()[..label.len().min(63)];
            out.push(u8::try_from(bytes.len()).unwrap_or(63));
            out.extend_from_slice(bytes);
        }
        out.push(0);
    }
    out
}

/// Decodes a possibly compressed domain name list (RFC 3397, RFC 1035 4.1.4).
fn decode_names(data: &[u8]) -> Result<Vec<String>, PacketDecodeError> {
    let mut names = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let mut labels: Vec<String> = Vec::new();
        let mut at = pos;
        let mut resume = None;
        // Each pointer must go backwards, so a list of n bytes can follow
        // at most n of them: that bounds loops.
        let mut jumps = 0;
        loop {
            let len = *data
                .get(at)
                .ok_or(PacketDecodeError::BadDomainSearch("name runs past the end"))?;
            match len {
                0 => {
                    at += 1;
                    break;
                }
                1..=63 => {
                    let label = data.get(at + 1..at + 1 + usize::from(len)).ok_or(
                        PacketDecodeError::BadDomainSearch("label runs past the end"),
                    )?;
                    let label = std::str::from_utf8(label)
                        .map_err(|_| PacketDecodeError::BadDomainSearch("label is not text"))?;
                    labels.push(label.to_owned());
                    at += 1 + usize::from(len);
                }
                0xc0..=0xff => {
                    let low = *data.get(at + 1).ok_or(PacketDecodeError::BadDomainSearch(
                        "pointer runs past the end",
                    ))?;
                    let target = usize::from(len & 0x3f) << 8 | usize::from(low);
                    if target >= at {
                        return Err(PacketDecodeError::BadDomainSearch("pointer goes forward"));
                    }
                    jumps += 1;
                    if jumps > data.len() {
                        return Err(PacketDecodeError::BadDomainSearch("pointer loop"));
                    }
                    resume.get_or_insert(at + 2);
                    at = target;
                }
                _ => return Err(PacketDecodeError::BadDomainSearch("reserved label type")),
            }
        }
        pos = resume.unwrap_or(at);
        names.push(labels.join("."));
    }
    Ok(names)
}

impl DhcpOptions {
    fn encode_into(&self, out: &mut Vec<u8>) {
        // The message type goes first: some servers look for it there.
        if let Some(t) = self.message_type {
            put(out, OPT_MESSAGE_TYPE, &[t.code()]);
        }
        if let Some(mask) = self.subnet_mask {
            put(out, OPT_SUBNET_MASK, &mask.octets());
        }
        if !self.routers.is_empty() {
            put(out, OPT_ROUTERS, &addrs(&self.routers));
        }
        if !self.dns.is_empty() {
            put(out, OPT_DNS, &addrs(&self.dns));
        }
        if let Some(name) = &self.hostname {
            put(out, OPT_HOSTNAME, name.as_bytes());
        }
        if let Some(name) = &self.domain_name {
            put(out, OPT_DOMAIN_NAME, name.as_bytes());
        }
        if let Some(mtu) = self.mtu {
            put(out, OPT_MTU, &mtu.to_be_bytes());
        }
        if !self.ntp.is_empty() {
            put(out, OPT_NTP, &addrs(&self.ntp));
        }
        if let Some(ip) = self.requested_ip {
            put(out, OPT_REQUESTED_IP, &ip.octets());
        }
        if let Some(secs) = self.lease_time {
            put(out, OPT_LEASE_TIME, &secs.to_be_bytes());
        }
        if let Some(ip) = self.server_id {
            put(out, OPT_SERVER_ID, &ip.octets());
        }
        if !self.parameter_request.is_empty() {
            put(out, OPT_PARAMETER_REQUEST, &self.parameter_request);
        }
        if let Some(text) = &self.message {
            put(out, OPT_MESSAGE, text.as_bytes());
        }
        if let Some(size) = self.max_message_size {
            put(out, OPT_MAX_MESSAGE_SIZE, &size.to_be_bytes());
        }
        if let Some(secs) = self.renewal_time {
            put(out, OPT_RENEWAL_TIME, &secs.to_be_bytes());
        }
        if let Some(secs) = self.rebinding_time {
            put(out, OPT_REBINDING_TIME, &secs.to_be_bytes());
        }
        if let Some(id) = &self.client_id {
            put(out, OPT_CLIENT_ID, id);
        }
        if !self.domain_search.is_empty() {
            put(out, OPT_DOMAIN_SEARCH, &encode_names(&self.domain_search));
        }
        if !self.classless_routes.is_empty() {
            let mut value = Vec::new();
            for r in &self.classless_routes {
                value.push(r.prefix);
                let significant = usize::from(r.prefix.min(32)).div_ceil(8);
                value.extend_from_slice(&r.destination.octets()[..significant]);
                value.extend_from_slice(&r.router.octets());
            }
            put(out, OPT_CLASSLESS_ROUTES, &value);
        }
    }

    fn decode(mut data: &[u8]) -> Result<Self, PacketDecodeError> {
        // Join repeated options first (RFC 3396), then parse each once.
        let mut raw: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        loop {
            let (&code, rest) = data.split_first().ok_or(PacketDecodeError::MissingEnd)?;
            match code {
                OPT_END => break,
                OPT_PAD => data = rest,
                _ => {
                    let (&len, rest) = rest
                        .split_first()
                        .ok_or(PacketDecodeError::TruncatedOption { code })?;
                    let len = usize::from(len);
                    let value = rest
                        .get(..len)
                        .ok_or(PacketDecodeError::TruncatedOption { code })?;
                    raw.entry(code).or_default().extend_from_slice(value);
                    data = &rest[len..];
                }
            }
        }
        if raw.contains_key(&OPT_OVERLOAD) {
            return Err(PacketDecodeError::OptionOverload);
        }
        let get = |code: u8| raw.get(&code).map(Vec::as_slice);
        let mut options = Self::default();
        if let Some(v) = get(OPT_MESSAGE_TYPE) {
            let [code] = exact::<1>(OPT_MESSAGE_TYPE, v)?;
            options.message_type = Some(
                MessageType::from_code(code).ok_or(PacketDecodeError::UnknownMessageType(code))?,
            );
        }
        options.subnet_mask = get(OPT_SUBNET_MASK)
            .map(|v| exact::<4>(OPT_SUBNET_MASK, v).map(Ipv4Addr::from))
            .transpose()?;
        options.routers = addr_list(OPT_ROUTERS, get(OPT_ROUTERS))?;
        options.dns = addr_list(OPT_DNS, get(OPT_DNS))?;
        options.ntp = addr_list(OPT_NTP, get(OPT_NTP))?;
        options.hostname = text(OPT_HOSTNAME, get(OPT_HOSTNAME))?;
        options.domain_name = text(OPT_DOMAIN_NAME, get(OPT_DOMAIN_NAME))?;
        options.message = text(OPT_MESSAGE, get(OPT_MESSAGE))?;
        options.mtu = get(OPT_MTU)
            .map(|v| exact::<2>(OPT_MTU, v).map(u16::from_be_bytes))
            .transpose()?;
        options.max_message_size = get(OPT_MAX_MESSAGE_SIZE)
            .map(|v| exact::<2>(OPT_MAX_MESSAGE_SIZE, v).map(u16::from_be_bytes))
            .transpose()?;
        options.requested_ip = get(OPT_REQUESTED_IP)
            .map(|v| exact::<4>(OPT_REQUESTED_IP, v).map(Ipv4Addr::from))
            .transpose()?;
        options.server_id = get(OPT_SERVER_ID)
            .map(|v| exact::<4>(OPT_SERVER_ID, v).map(Ipv4Addr::from))
            .transpose()?;
        for (code, slot) in [
            (OPT_LEASE_TIME, &mut options.lease_time),
            (OPT_RENEWAL_TIME, &mut options.renewal_time),
            (OPT_REBINDING_TIME, &mut options.rebinding_time),
        ] {
            *slot = get(code)
                .map(|v| exact::<4>(code, v).map(u32::from_be_bytes))
                .transpose()?;
        }
        options.parameter_request = get(OPT_PARAMETER_REQUEST).unwrap_or_default().to_vec();
        options.client_id = get(OPT_CLIENT_ID).map(<[u8]>::to_vec);
        if let Some(v) = get(OPT_DOMAIN_SEARCH) {
            options.domain_search = decode_names(v)?;
        }
        if let Some(mut v) = get(OPT_CLASSLESS_ROUTES) {
            while let Some((&prefix, rest)) = v.split_first() {
                if prefix > 32 {
                    return Err(PacketDecodeError::BadRoutePrefix(prefix));
                }
                let significant = usize::from(prefix).div_ceil(8);
                let entry =
                    rest.get(..significant + 4)
                        .ok_or(PacketDecodeError::BadOptionLength {
                            code: OPT_CLASSLESS_ROUTES,
                            len: raw.get(&OPT_CLASSLESS_ROUTES).map_or(0, Vec::len),
                        })?;
                let mut destination = [0u8; 4];
                destination[..significant].copy_from_slice(&entry[..significant]);
                options.classless_routes.push(ClasslessRoute {
                    destination: Ipv4Addr::from(destination),
                    prefix,
                    router: ipv4_at(entry, significant),
                });
                v = &rest[significant + 4..];
            }
        }
        Ok(options)
    }
}

fn exact<const N: usize>(code: u8, value: &[u8]) -> Result<[u8; N], PacketDecodeError> {
    value
        .try_into()
        .map_err(|_| PacketDecodeError::BadOptionLength {
            code,
            len: value.len(),
        })
}

fn addr_list(code: u8, value: Option<&[u8]>) -> Result<Vec<Ipv4Addr>, PacketDecodeError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    if value.len() % 4 != 0 {
        return Err(PacketDecodeError::BadOptionLength {
            code,
            len: value.len(),
        });
    }
    Ok(value
        .chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect())
}

fn text(code: u8, value: Option<&[u8]>) -> Result<Option<String>, PacketDecodeError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let trimmed = match value.iter().rposition(|b| *b != 0) {
        Some(last) => &value[..=last],
        None => &[],
    };
    std::str::from_utf8(trimmed)
        .map(|s| Some(s.to_owned()))
        .map_err(|_| PacketDecodeError::NotText { code })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn offer() -> DhcpMessage {
        DhcpMessage {
            op: Op::Reply,
            xid: 0x1234_5678,
            secs: 0,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 0, 0, 50),
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [2, 0, 0, 0, 0, 1],
            options: DhcpOptions {
                message_type: Some(MessageType::Offer),
                server_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
                lease_time: Some(120),
                subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                routers: vec![Ipv4Addr::new(10, 0, 0, 1)],
                ..DhcpOptions::default()
            },
        }
    }

    #[test]
    fn encoded_message_has_the_rfc2131_layout() {
        let bytes = offer().encode();
        assert_eq!(bytes.len(), MIN_MESSAGE_LEN, "padded to the BOOTP minimum");
        assert_eq!(&bytes[..4], &[2, 1, 6, 0]);
        assert_eq!(&bytes[4..8], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&bytes[10..12], &[0x80, 0], "broadcast flag");
        assert_eq!(&bytes[16..20], &[10, 0, 0, 50]);
        assert_eq!(&bytes[28..34], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&bytes[236..240], &MAGIC_COOKIE);
        assert_eq!(&bytes[240..243], &[53, 1, 2], "message type first");
    }

    #[test]
    fn repeated_options_are_joined_and_names_decompressed() {
        let mut bytes = offer().encode();
        bytes.truncate(OPTIONS_START);
        // DNS split over two instances of option 6.
        bytes.extend_from_slice(&[6, 4, 10, 0, 0, 53, 6, 4, 10, 0, 0, 54]);
        // "a.example", then "b" + pointer to "example" at offset 2.
        bytes.extend_from_slice(&[119, 15, 1, b'a', 7]);
        bytes.extend_from_slice(b"example");
        bytes.extend_from_slice(&[0, 1, b'b', 0xc0, 2]);
        // Host name with a trailing NUL, and the end.
        bytes.extend_from_slice(&[12, 5, b'n', b'o', b'd', b'e', 0, 255]);
        let m = DhcpMessage::decode(&bytes).unwrap();
        assert_eq!(
            m.options.dns,
            [Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 0, 54)]
        );
        assert_eq!(m.options.domain_search, ["a.example", "b.example"]);
        assert_eq!(m.options.hostname.as_deref(), Some("node"));
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let good = offer().encode();
        assert_eq!(
            DhcpMessage::decode(&good[..100]),
            Err(PacketDecodeError::TooShort(100))
        );
        let mut bad = good.clone();
        bad[236] = 0;
        assert!(matches!(
            DhcpMessage::decode(&bad),
            Err(PacketDecodeError::BadCookie(_))
        ));
        let mut bad = good.clone();
        bad[2] = 16;
        assert_eq!(
            DhcpMessage::decode(&bad),
            Err(PacketDecodeError::NotEthernet { htype: 1, hlen: 16 })
        );
        let mut bad = good[..OPTIONS_START].to_vec();
        bad.extend_from_slice(&[1, 3, 255, 255, 255, 255]);
        assert_eq!(
            DhcpMessage::decode(&bad),
            Err(PacketDecodeError::BadOptionLength { code: 1, len: 3 })
        );
        let mut bad = good[..OPTIONS_START].to_vec();
        bad.extend_from_slice(&[3, 8, 10, 0]);
        assert_eq!(
            DhcpMessage::decode(&bad),
            Err(PacketDecodeError::TruncatedOption { code: 3 })
        );
        let mut bad = good[..OPTIONS_START].to_vec();
        bad.extend_from_slice(&[52, 1, 3, 255]);
        assert_eq!(
            DhcpMessage::decode(&bad),
            Err(PacketDecodeError::OptionOverload)
        );
        let mut bad = good[..OPTIONS_START].to_vec();
        bad.extend_from_slice(&[53, 1, 9, 255]);
        assert_eq!(
            DhcpMessage::decode(&bad),
            Err(PacketDecodeError::UnknownMessageType(9))
        );
        let mut bad = good[..OPTIONS_START].to_vec();
        bad.extend_from_slice(&[119, 4, 1, b'a', 0xc0, 0, 255]);
        assert!(matches!(
            DhcpMessage::decode(&bad),
            Err(PacketDecodeError::BadDomainSearch(_))
        ));
        let no_end = good[..OPTIONS_START + 3].to_vec();
        assert_eq!(
            DhcpMessage::decode(&no_end),
            Err(PacketDecodeError::MissingEnd)
        );
    }

    fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    fn message_type() -> impl Strategy<Value = MessageType> {
        (1u8..=8).prop_map(|c| MessageType::from_code(c).unwrap_or(MessageType::Ack))
    }

    fn route() -> impl Strategy<Value = ClasslessRoute> {
        (any::<u32>(), 0u8..=32, ipv4()).prop_map(|(dest, prefix, router)| {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            ClasslessRoute {
                destination: Ipv4Addr::from(dest & mask),
                prefix,
                router,
            }
        })
    }

    fn options() -> impl Strategy<Value = DhcpOptions> {
        let text = "[a-zA-Z0-9 .-]{0,300}";
        let name = "[a-z0-9]{1,20}(\\.[a-z0-9]{1,20}){0,3}";
        (
            (
                proptest::option::of(message_type()),
                proptest::option::of(ipv4()),
                proptest::option::of(ipv4()),
                proptest::collection::vec(any::<u8>(), 0..20),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(ipv4()),
            ),
            (
                proptest::collection::vec(ipv4(), 0..70),
                proptest::collection::vec(ipv4(), 0..5),
                proptest::collection::vec(ipv4(), 0..5),
                proptest::option::of(text),
                proptest::option::of(text),
                proptest::collection::vec(name, 0..30),
                proptest::option::of(any::<u16>()),
                proptest::collection::vec(route(), 0..40),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
                proptest::option::of(any::<u16>()),
                proptest::option::of(text),
            ),
        )
            .prop_map(|(a, b)| DhcpOptions {
                message_type: a.0,
                requested_ip: a.1,
                server_id: a.2,
                parameter_request: a.3,
                lease_time: a.4,
                renewal_time: a.5,
                rebinding_time: a.6,
                subnet_mask: a.7,
                routers: b.0,
                dns: b.1,
                ntp: b.2,
                hostname: b.3,
                domain_name: b.4,
                domain_search: b.5,
                mtu: b.6,
                classless_routes: b.7,
                client_id: b.8,
                max_message_size: b.9,
                message: b.10,
            })
    }

    fn message() -> impl Strategy<Value = DhcpMessage> {
        (
            any::<bool>(),
            any::<u32>(),
            any::<u16>(),
            any::<bool>(),
            (ipv4(), ipv4(), ipv4(), ipv4()),
            any::<[u8; 6]>(),
            options(),
        )
            .prop_map(
                |(reply, xid, secs, broadcast, a, chaddr, options)| DhcpMessage {
                    op: if reply { Op::Reply } else { Op::Request },
                    xid,
                    secs,
                    broadcast,
                    ciaddr: a.0,
                    yiaddr: a.1,
                    siaddr: a.2,
                    giaddr: a.3,
                    chaddr,
                    options,
                },
            )
    }

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_message_back(m in message()) {
            prop_assert_eq!(DhcpMessage::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = DhcpMessage::decode(&bytes);
        }

        #[test]
        fn decoding_arbitrary_options_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = offer().encode();
            bytes.truncate(OPTIONS_START);
            bytes.extend_from_slice(&tail);
            let _ = DhcpMessage::decode(&bytes);
        }
    }
}
