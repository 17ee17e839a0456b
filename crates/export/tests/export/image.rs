//! Image config and manifest: deterministic, digests right, history checked.

use std::collections::BTreeMap;

use forge_export::{build_image, build_index, ExportError, ImageSpec, LayerInfo};
use oci_spec::image::{
    Arch, ConfigBuilder, Digest, HistoryBuilder, MediaType, Os, PlatformBuilder,
};

use crate::tree::sha256;

fn digest(byte: char) -> Digest {
    Digest::try_from(format!("sha256:{}", byte.to_string().repeat(64))).unwrap()
}

pub(crate) fn spec() -> ImageSpec {
    let config = ConfigBuilder::default()
        .env(vec!["PATH=/usr/bin:/bin".to_owned()])
        .cmd(vec!["/bin/sh".to_owned()])
        .exposed_ports(vec![
            "8080/tcp".to_owned(),
            "443/tcp".to_owned(),
            "53/udp".to_owned(),
        ])
        .labels(
            [
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "1".to_owned()),
                ("c".to_owned(), "3".to_owned()),
            ]
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .unwrap();
    ImageSpec {
        layers: vec![LayerInfo {
            diff_id: digest('a'),
            digest: digest('b'),
            size: 1234,
            uncompressed_size: 4096,
            media_type: MediaType::ImageLayerGzip,
        }],
        history: vec![
            HistoryBuilder::default()
                .created_by("RUN echo hi")
                .build()
                .unwrap(),
            HistoryBuilder::default()
                .created_by("CMD [\"/bin/sh\"]")
                .empty_layer(true)
                .build()
                .unwrap(),
        ],
        config,
        docker_config: BTreeMap::from([("Shell".to_owned(), serde_json::json!(["/bin/sh", "-c"]))]),
        platform: PlatformBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .build()
            .unwrap(),
        source_date_epoch: Some(1_700_000_000),
        ..ImageSpec::default()
    }
}

#[test]
fn image_config_is_deterministic_and_digests_match() {
    let a = build_image(&spec()).unwrap();
    let b = build_image(&spec()).unwrap();
    assert_eq!(
        a.config_json, b.config_json,
        "HashMap order must not leak into the JSON"
    );
    assert_eq!(a.manifest_json, b.manifest_json);
    assert_eq!(
        a.config_descriptor.digest().to_string(),
        sha256(&a.config_json)
    );
    assert_eq!(a.config_descriptor.size(), a.config_json.len() as u64);
    assert_eq!(
        a.manifest_descriptor.digest().to_string(),
        sha256(&a.manifest_json)
    );
    assert_eq!(a.manifest.layers()[0].digest(), &digest('b'));
    let value: serde_json::Value = serde_json::from_slice(&a.config_json).unwrap();
    assert_eq!(value["created"], "2023-11-14T22:13:20Z");
    assert_eq!(value["rootfs"]["diff_ids"][0], digest('a').to_string());
    assert_eq!(value["config"]["Shell"][0], "/bin/sh");
    insta::assert_snapshot!("config", serde_json::to_string_pretty(&value).unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&a.manifest_json).unwrap();
    insta::assert_snapshot!("manifest", serde_json::to_string_pretty(&manifest).unwrap());
}

#[test]
fn base_layers_come_first() {
    let base = build_image(&spec()).unwrap();
    let mut child = spec();
    child.base = Some(forge_export::BaseImage {
        config: base.config.clone(),
        layers: base.manifest.layers().clone(),
    });
    child.layers[0].diff_id = digest('c');
    child.layers[0].digest = digest('d');
    let built = build_image(&child).unwrap();
    let diff_ids = built.config.rootfs().diff_ids();
    assert_eq!(
        diff_ids,
        &vec![digest('a').to_string(), digest('c').to_string()]
    );
    let layers: Vec<_> = built
        .manifest
        .layers()
        .iter()
        .map(|l| l.digest().clone())
        .collect();
    assert_eq!(layers, vec![digest('b'), digest('d')]);
    assert_eq!(built.config.history().len(), 4);
}

#[test]
fn history_must_match_layers() {
    let mut s = spec();
    s.history.pop();
    s.history.push(
        HistoryBuilder::default()
            .created_by("RUN again")
            .build()
            .unwrap(),
    );
    let err = build_image(&s).unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::HistoryMismatch {
                layers: 1,
                history: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn index_lists_platform_manifests() {
    let amd = build_image(&spec()).unwrap();
    let mut arm_spec = spec();
    arm_spec.platform = PlatformBuilder::default()
        .architecture(Arch::ARM64)
        .os(Os::Linux)
        .variant("v8")
        .build()
        .unwrap();
    let arm = build_image(&arm_spec).unwrap();
    let index = build_index(
        &[
            amd.manifest_descriptor.clone(),
            arm.manifest_descriptor.clone(),
        ],
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(
        index.index_descriptor.digest().to_string(),
        sha256(&index.index_json)
    );
    let value: serde_json::Value = serde_json::from_slice(&index.index_json).unwrap();
    assert_eq!(
        value["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(value["manifests"][1]["platform"]["architecture"], "arm64");
    assert_eq!(value["manifests"][1]["platform"]["variant"], "v8");
}
