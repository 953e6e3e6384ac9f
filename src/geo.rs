//! Client location: which precomputed location a query is answered for.
//!
//! Locations are fixed at start from config: index 0 is "unknown"; then every configured region
//! (with its coordinates, used to order fallbacks by distance) and every (region, zone, member
//! cluster) that a client network maps to (a member cluster's pod/node networks name their
//! cluster, for the in-cluster redirect; `local_cluster` is the cluster of every other client). A [`Locator`] maps an address to a location with configured client
//! networks (longest prefix wins) and, failing that, a GeoIP database turned at load time into a
//! sorted range table (nearest configured region by great-circle distance). Guarantees: `locate`
//! allocates nothing and takes at most one hash lookup per configured prefix length plus one
//! binary search.

use std::collections::HashMap;
use std::net::IpAddr;

use rustc_hash::FxHashMap;

/// A client location the table precomputes answers for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// Empty when only the cluster is known (a Kubernetes member whose topology comes from its
    /// Node labels): selection then takes the cluster's region and zone from the federation.
    pub region: String,
    pub zone: Option<String>,
    /// The member cluster the client runs in (its pod or node networks), for the in-cluster
    /// redirect names (`SVC.NS.FED.svc.cluster.local`).
    pub cluster: Option<String>,
}

/// How a client's location was found (for explain).
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// A configured client network.
    Network {
        cidr: String,
    },
    /// The GeoIP database.
    GeoIp {
        network: String,
    },
    Unknown,
}

/// One IPv4 or IPv6 range of the GeoIP table: `[start, end]` → location, with the database
/// network's prefix length (the ECS scope).
#[derive(Clone, Debug)]
struct Range {
    start: u128,
    end: u128,
    location: u16,
    /// The longest database prefix merged into this range (a safe ECS scope for all of it).
    prefix: u8,
}

/// Address → location. Immutable; a reload of `geo` makes a new one, which the merger
/// publishes inside the table laid out for it.
#[derive(Debug)]
pub struct Locator {
    locations: Vec<Option<Location>>,
    coords: HashMap<String, (f64, f64)>,
    /// Per family, per prefix length (longest first): masked address → location. IPv4 is kept
    /// as IPv4-mapped IPv6 (prefix + 96) so one code path serves both families.
    networks_v4: Vec<(u8, FxHashMap<u128, u16>)>,
    networks_v6: Vec<(u8, FxHashMap<u128, u16>)>,
    ranges: Vec<Range>,
    /// Honour EDNS Client Subnet options.
    pub ecs: bool,
    /// The cluster of every client no cluster network covers (a fedns running inside one
    /// member cluster, asked only by that cluster's DNS).
    local_cluster: Option<String>,
}

/// A configured client network: `cidr` → region (and optionally zone), or a member cluster's
/// pod/node network (`cluster` set; `region` empty when the cluster's topology is not known
/// before its Nodes are listed).
#[derive(Clone, Debug)]
pub struct ClientNetwork {
    pub addr: IpAddr,
    pub prefix: u8,
    pub region: String,
    pub zone: Option<String>,
    pub cluster: Option<String>,
}

/// A GeoIP network with its coordinates, as read from the database.
#[derive(Clone, Debug)]
pub struct GeoNetwork {
    pub addr: IpAddr,
    pub prefix: u8,
    pub lat: f64,
    pub lon: f64,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Prefix length in the unified (IPv6 or IPv4-mapped) space.
fn unified_prefix(ip: IpAddr, prefix: u8) -> u8 {
    if ip.is_ipv4() {
        prefix.min(32) + 96
    } else {
        prefix.min(128)
    }
}

fn mask(v: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        v & (u128::MAX << (128 - prefix as u32))
    }
}

/// Great-circle distance in km.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

impl Locator {
    /// `regions`: (name, latitude, longitude) of every region clients may be placed in.
    /// `local_cluster`: the cluster of clients that no cluster network covers.
    pub fn new(
        regions: &[(String, f64, f64)],
        networks: &[ClientNetwork],
        geoip: &[GeoNetwork],
        ecs: bool,
        local_cluster: Option<&str>,
    ) -> Self {
        let mut loc = Locator {
            locations: vec![None],
            coords: HashMap::new(),
            networks_v4: Vec::new(),
            networks_v6: Vec::new(),
            ranges: Vec::new(),
            ecs,
            local_cluster: local_cluster.map(str::to_string),
        };
        for (name, lat, lon) in regions {
            loc.coords.insert(name.clone(), (*lat, *lon));
            loc.intern(Location {
                region: name.clone(),
                zone: None,
                cluster: None,
            });
        }
        let mut by_len: [HashMap<u8, FxHashMap<u128, u16>>; 2] = Default::default();
        for n in networks {
            let id = loc.intern(Location {
                region: n.region.clone(),
                zone: n.zone.clone(),
                cluster: n.cluster.clone(),
            });
            let p = unified_prefix(n.addr, n.prefix);
            by_len[n.addr.is_ipv6() as usize]
                .entry(p)
                .or_default()
                .insert(mask(to_u128(n.addr), p), id);
        }
        let [v4, v6] = by_len;
        for (dst, src) in [(&mut loc.networks_v4, v4), (&mut loc.networks_v6, v6)] {
            *dst = src.into_iter().collect();
            dst.sort_by_key(|n| std::cmp::Reverse(n.0));
        }
        if !loc.coords.is_empty() {
            for g in geoip {
                let nearest = loc
                    .coords
                    .iter()
                    .min_by(|a, b| {
                        distance_km(*a.1, (g.lat, g.lon))
                            .total_cmp(&distance_km(*b.1, (g.lat, g.lon)))
                    })
                    .map(|(name, _)| name.clone())
                    .expect("coords is not empty");
                let id = loc.intern(Location {
                    region: nearest,
                    zone: None,
                    cluster: None,
                });
                let p = unified_prefix(g.addr, g.prefix);
                let start = mask(to_u128(g.addr), p);
                let end = start
                    | if p == 0 {
                        u128::MAX
                    } else {
                        !(u128::MAX << (128 - p as u32))
                    };
                loc.ranges.push(Range {
                    start,
                    end,
                    location: id,
                    prefix: g.prefix,
                });
            }
            loc.ranges.sort_by_key(|r| r.start);
            // Adjacent networks mapping to the same region become one range: a city database's
            // millions of networks shrink to a few per region boundary.
            let mut merged: Vec<Range> = Vec::with_capacity(loc.ranges.len() / 8);
            for r in std::mem::take(&mut loc.ranges) {
                match merged.last_mut() {
                    Some(m)
                        if m.location == r.location && m.end.checked_add(1) == Some(r.start) =>
                    {
                        m.end = r.end;
                        m.prefix = m.prefix.max(r.prefix);
                    }
                    _ => merged.push(r),
                }
            }
            loc.ranges = merged;
        }
        loc
    }

    fn intern(&mut self, l: Location) -> u16 {
        if let Some(i) = self.locations.iter().position(|x| x.as_ref() == Some(&l)) {
            return i as u16;
        }
        self.locations.push(Some(l));
        (self.locations.len() - 1) as u16
    }

    /// Every location; index 0 (unknown) is `None`.
    pub fn locations(&self) -> &[Option<Location>] {
        &self.locations
    }

    /// The member cluster location `id`'s clients run in: their cluster network's, else the
    /// configured local cluster (build time only).
    pub fn cluster_of(&self, id: usize) -> Option<&str> {
        self.locations
            .get(id)
            .and_then(|l| l.as_ref())
            .and_then(|l| l.cluster.as_deref())
            .or(self.local_cluster.as_deref())
    }

    pub fn coordinates(&self, region: &str) -> Option<(f64, f64)> {
        self.coords.get(region).copied()
    }

    /// What decides `ip`'s location: a configured network (its id, unified prefix length and
    /// masked address) or a GeoIP range; `None` when nothing covers it.
    #[inline]
    fn find(&self, ip: IpAddr) -> Option<Match<'_>> {
        let v = to_u128(ip);
        let networks = if ip.is_ipv4() {
            &self.networks_v4
        } else {
            &self.networks_v6
        };
        for (p, map) in networks {
            if let Some(id) = map.get(&mask(v, *p)) {
                return Some(Match::Network {
                    id: *id,
                    prefix: *p,
                    masked: mask(v, *p),
                });
            }
        }
        let i = self.ranges.partition_point(|r| r.start <= v);
        (i > 0 && self.ranges[i - 1].end >= v).then(|| Match::Range(&self.ranges[i - 1]))
    }

    /// The location of `ip` and the prefix length that decided it (the ECS scope). Unknown is
    /// location 0 with scope `unknown_scope`.
    #[inline]
    pub fn locate(&self, ip: IpAddr, unknown_scope: u8) -> (u16, u8) {
        let family_bits = if ip.is_ipv4() { 96 } else { 0 };
        match self.find(ip) {
            Some(Match::Network { id, prefix, .. }) => (id, prefix - family_bits),
            Some(Match::Range(r)) => (r.location, r.prefix),
            None => (0, unknown_scope),
        }
    }

    /// Like [`locate`](Self::locate), and says how (slow path, for explain).
    pub fn explain(&self, ip: IpAddr) -> (u16, Found) {
        let (v4, family_bits) = if ip.is_ipv4() { (true, 96) } else { (false, 0) };
        match self.find(ip) {
            Some(Match::Network { id, prefix, masked }) => {
                let cidr = format!("{}/{}", from_u128(masked, v4), prefix - family_bits);
                (id, Found::Network { cidr })
            }
            Some(Match::Range(r)) => {
                let network = format!("{}..{}", from_u128(r.start, v4), from_u128(r.end, v4));
                (r.location, Found::GeoIp { network })
            }
            None => (0, Found::Unknown),
        }
    }
}

/// See [`Locator::find`].
enum Match<'a> {
    Network { id: u16, prefix: u8, masked: u128 },
    Range(&'a Range),
}

/// Reads every network with coordinates from a MaxMind DB file (GeoIP2/GeoLite2 City, DB-IP
/// City Lite, or anything with `location.latitude`/`location.longitude`).
pub fn read_geoip(path: &std::path::Path) -> Result<Vec<GeoNetwork>, String> {
    #[derive(serde::Deserialize)]
    struct Record {
        location: Option<Coordinates>,
    }
    #[derive(serde::Deserialize)]
    struct Coordinates {
        latitude: Option<f64>,
        longitude: Option<f64>,
    }
    let err = |e: maxminddb::MaxMindDbError| format!("{}: {e}", path.display());
    let reader = maxminddb::Reader::open_readfile(path).map_err(err)?;
    let mut out = Vec::new();
    for item in reader.networks(Default::default()).map_err(err)? {
        let item = item.map_err(err)?;
        let network = item.network().map_err(err)?;
        if let Some(Record {
            location:
                Some(Coordinates {
                    latitude: Some(lat),
                    longitude: Some(lon),
                }),
        }) = item.decode::<Record>().map_err(err)?
        {
            out.push(GeoNetwork {
                addr: network.ip(),
                prefix: network.prefix(),
                lat,
                lon,
            });
        }
    }
    Ok(out)
}

impl Default for Locator {
    /// No locations but "unknown": every client gets the location-independent answer.
    fn default() -> Self {
        Locator::new(&[], &[], &[], false, None)
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    let a = std::net::Ipv6Addr::from(v);
    match a.to_ipv4_mapped() {
        Some(x) if v4 => IpAddr::V4(x),
        _ => IpAddr::V6(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(cidr: &str, region: &str, zone: Option<&str>) -> ClientNetwork {
        let (a, p) = cidr.split_once('/').unwrap();
        ClientNetwork {
            addr: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
            region: region.into(),
            zone: zone.map(Into::into),
            cluster: None,
        }
    }

    #[test]
    fn longest_prefix_wins_and_both_families_work() {
        let l = Locator::new(
            &[("east".into(), 40.0, -75.0), ("west".into(), 37.0, -122.0)],
            &[
                net("10.0.0.0/8", "east", None),
                net("10.1.0.0/16", "west", Some("west-a")),
                net("2001:db8::/32", "west", None),
            ],
            &[],
            true,
            None,
        );
        let (east, _) = l.locate("10.9.9.9".parse().unwrap(), 0);
        let (wa, scope) = l.locate("10.1.2.3".parse().unwrap(), 0);
        assert_eq!(
            l.locations()[east as usize].as_ref().unwrap().region,
            "east"
        );
        assert_eq!(
            l.locations()[wa as usize].as_ref().unwrap().zone.as_deref(),
            Some("west-a")
        );
        assert_eq!(scope, 16);
        let (w6, scope6) = l.locate("2001:db8::1".parse().unwrap(), 0);
        assert_eq!(l.locations()[w6 as usize].as_ref().unwrap().region, "west");
        assert_eq!(scope6, 32);
        assert_eq!(l.locate("192.0.2.1".parse().unwrap(), 24), (0, 24));
        // An IPv6 address whose low bits look like 10/8 is not 10/8.
        assert_eq!(l.locate("::a00:1".parse().unwrap(), 0).0, 0);
    }

    #[test]
    fn geoip_ranges_map_to_the_nearest_region() {
        let l = Locator::new(
            &[("east".into(), 40.0, -75.0), ("eu".into(), 50.0, 8.0)],
            &[],
            &[GeoNetwork {
                addr: "81.0.0.0".parse().unwrap(),
                prefix: 8,
                lat: 52.5,
                lon: 13.4,
            }],
            true,
            None,
        );
        let (id, scope) = l.locate("81.2.3.4".parse().unwrap(), 0);
        assert_eq!(l.locations()[id as usize].as_ref().unwrap().region, "eu");
        assert_eq!(scope, 8);
        assert_eq!(l.locate("82.0.0.1".parse().unwrap(), 0).0, 0);
        assert!(matches!(
            l.explain("81.2.3.4".parse().unwrap()).1,
            Found::GeoIp { .. }
        ));
    }

    #[test]
    fn distances() {
        let nyc = (40.71, -74.0);
        let london = (51.5, -0.12);
        let d = distance_km(nyc, london);
        assert!((5500.0..5640.0).contains(&d), "{d}");
    }
}
