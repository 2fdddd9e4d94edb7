#[test]
fn arm64_fixture_builds() {
    let _ = testkit::fixtures::trixie_arm64_rootfs();
}
