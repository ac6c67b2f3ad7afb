/// The release, in one place: `cordon --version`, `cordon-server --version`, what agents report,
/// and the Debian packages' version (`.packaging/build-debs` asks the binary).
public enum CordonVersion {
    public static let current = "0.3.0"
}
