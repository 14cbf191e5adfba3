//! JSON in and out: size-capped parsing of outside documents, and
//! canonical (sorted-key, compact) output so the same image always has the
//! same digest.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The largest manifest, index or config Cairn reads into memory. Registries
/// cap manifests at 4 MiB; configs of real images are a few KiB.
pub const MAX_JSON_BYTES: u64 = 4 * 1024 * 1024;

/// Serializes with object keys sorted at every level. oci-spec keeps
/// annotations and exposed ports in `HashMap`s, whose order changes
/// between runs; sorting makes the bytes (and so the digest) stable.
pub fn to_canonical_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    serde_json::to_vec(&sorted(value))
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(k, sorted(v));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_)) => other,
    }
}

/// Parses outside bytes. oci-spec types ignore unknown fields, as the
/// image spec requires of consumers ("MUST ignore unknown properties").
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
    use proptest::prelude::*;

    const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
      "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},
      "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}],
      "annotations":{"b":"2","a":"1","c":"3"}}"#;

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux",
      "config":{"Env":["PATH=/bin"],"ExposedPorts":{"80/tcp":{},"6379/tcp":{},"22/tcp":{}},"Labels":{"z":"1","y":"2"}},
      "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#;

    #[test]
    fn canonical_output_sorts_hash_map_keys() {
        let m: ImageManifest = parse(MANIFEST.as_bytes()).unwrap();
        let bytes = to_canonical_vec(&m).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#"{"a":"1","b":"2","c":"3"}"#), "{text}");
        let c: ImageConfiguration = parse(CONFIG.as_bytes()).unwrap();
        let text = String::from_utf8(to_canonical_vec(&c).unwrap()).unwrap();
        assert!(
            text.contains(r#""ExposedPorts":{"22/tcp":{},"6379/tcp":{},"80/tcp":{}}"#),
            "{text}"
        );
    }

    fn round_trips<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
        if let Ok(doc) = parse::<T>(bytes) {
            let once = to_canonical_vec(&doc).unwrap();
            let again = to_canonical_vec(&parse::<T>(&once).unwrap()).unwrap();
            assert_eq!(once, again);
        }
    }

    #[test]
    fn valid_documents_round_trip_byte_for_byte() {
        round_trips::<ImageManifest>(MANIFEST.as_bytes());
        round_trips::<ImageConfiguration>(CONFIG.as_bytes());
        assert!(parse::<ImageManifest>(MANIFEST.as_bytes()).is_ok());
        assert!(parse::<ImageConfiguration>(CONFIG.as_bytes()).is_ok());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z0-9:./+-]{0,70}".prop_map(Value::String),
            Just(Value::String(
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()
            )),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("schemaVersion".to_owned()),
                        Just("mediaType".to_owned()),
                        Just("manifests".to_owned()),
                        Just("layers".to_owned()),
                        Just("config".to_owned()),
                        Just("digest".to_owned()),
                        Just("size".to_owned()),
                        Just("annotations".to_owned()),
                        Just("platform".to_owned()),
                        Just("rootfs".to_owned()),
                        Just("diff_ids".to_owned()),
                        Just("ExposedPorts".to_owned()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn descriptor() -> impl Strategy<Value = oci_spec::image::Descriptor> {
        (
            proptest::collection::vec(any::<u8>(), 32),
            any::<u32>(),
            prop_oneof![
                Just(crate::media::OCI_LAYER_GZIP),
                Just(crate::media::OCI_LAYER_TAR),
                Just(crate::media::OCI_LAYER_ZSTD),
            ],
            proptest::collection::hash_map("[a-z.]{1,12}", ".{0,12}", 0..3),
        )
            .prop_map(|(hash, size, mt, ann)| {
                let digest = crate::Digest::parse(&format!("sha256:{}", hex::encode(hash)))
                    .unwrap()
                    .to_spec();
                let mut d = oci_spec::image::Descriptor::new(mt.into(), u64::from(size), digest);
                if !ann.is_empty() {
                    d.set_annotations(Some(ann));
                }
                d
            })
    }

    fn manifest() -> impl Strategy<Value = ImageManifest> {
        (
            descriptor(),
            proptest::collection::vec(descriptor(), 0..4),
            proptest::collection::hash_map("[a-z.]{1,12}", ".{0,12}", 0..4),
        )
            .prop_map(|(config, layers, ann)| {
                let mut b = oci_spec::image::ImageManifestBuilder::default()
                    .schema_version(2u32)
                    .media_type(oci_spec::image::MediaType::ImageManifest)
                    .config(config)
                    .layers(layers);
                if !ann.is_empty() {
                    b = b.annotations(ann);
                }
                b.build().unwrap()
            })
    }

    fn config() -> impl Strategy<Value = ImageConfiguration> {
        (
            proptest::collection::vec("[A-Z]{1,5}=.{0,8}", 0..4),
            proptest::collection::btree_set("[0-9]{1,5}/(tcp|udp)", 0..4),
            proptest::collection::vec(any::<[u8; 32]>(), 0..3),
        )
            .prop_map(|(env, ports, ids)| {
                let mut c = oci_spec::image::ConfigBuilder::default().env(env);
                if !ports.is_empty() {
                    c = c.exposed_ports(ports.into_iter().collect::<Vec<_>>());
                }
                oci_spec::image::ImageConfigurationBuilder::default()
                    .architecture(oci_spec::image::Arch::Amd64)
                    .os(oci_spec::image::Os::Linux)
                    .config(c.build().unwrap())
                    .rootfs(
                        oci_spec::image::RootFsBuilder::default()
                            .typ("layers")
                            .diff_ids(
                                ids.iter()
                                    .map(|h| format!("sha256:{}", hex::encode(h)))
                                    .collect::<Vec<_>>(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap()
            })
    }

    proptest! {
        #[test]
        fn generated_manifests_round_trip_through_canonical_json(m in manifest()) {
            let bytes = to_canonical_vec(&m).unwrap();
            let back: ImageManifest = parse(&bytes).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(to_canonical_vec(&back).unwrap(), bytes);
        }

        #[test]
        fn generated_indexes_round_trip_through_canonical_json(ds in proptest::collection::vec(descriptor(), 0..5)) {
            let index = oci_spec::image::ImageIndexBuilder::default()
                .schema_version(2u32)
                .manifests(ds)
                .build()
                .unwrap();
            let bytes = to_canonical_vec(&index).unwrap();
            let back: ImageIndex = parse(&bytes).unwrap();
            prop_assert_eq!(&back, &index);
        }

        #[test]
        fn generated_configs_round_trip_through_canonical_json(c in config()) {
            let bytes = to_canonical_vec(&c).unwrap();
            let back: ImageConfiguration = parse(&bytes).unwrap();
            // Exposed ports come back from a map, in any order.
            prop_assert_eq!(to_canonical_vec(&back).unwrap(), bytes);
            prop_assert_eq!(back.rootfs(), c.rootfs());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            round_trips::<ImageIndex>(&bytes);
            round_trips::<ImageManifest>(&bytes);
            round_trips::<ImageConfiguration>(&bytes);
        }

        #[test]
        fn structured_json_never_panics_and_parsed_documents_round_trip(v in json_value()) {
            let bytes = serde_json::to_vec(&v).unwrap();
            round_trips::<ImageIndex>(&bytes);
            round_trips::<ImageManifest>(&bytes);
            round_trips::<ImageConfiguration>(&bytes);
        }
    }
}
