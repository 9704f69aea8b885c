import APIKeysCore
import Testing

@Suite struct IPNetworkTests {
    @Test func networksAreParsedAndNormalised() throws {
        #expect(IPNetwork("10.1.2.3/8")?.description == "10.0.0.0/8")
        #expect(IPNetwork("192.0.2.7")?.description == "192.0.2.7/32")
        #expect(IPNetwork("0.0.0.0/0")?.description == "0.0.0.0/0")
        #expect(IPNetwork("2001:DB8:0:0:1::/32")?.description == "2001:db8::/32")
        #expect(IPNetwork("::1")?.description == "::1/128")
        #expect(IPNetwork("::/0")?.description == "::/0")
        for bad in [
            "", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0/8", "10.0.0.0/8/8", "::1/129", "example.com", "10.0.0.0/ 8",
            "1.2.3.4/٣",
        ] {
            #expect(IPNetwork(bad) == nil, "\(bad)")
        }
    }

    @Test func addressesMatchTheirNetworks() throws {
        let v4 = try #require(IPNetwork("10.0.0.0/8"))
        let v6 = try #require(IPNetwork("2001:db8::/32"))
        func inside(_ network: IPNetwork, _ address: String) -> Bool {
            IPNetwork.address(address).map(network.contains) ?? false
        }
        #expect(inside(v4, "10.255.0.1"))
        #expect(!inside(v4, "11.0.0.1"))
        #expect(inside(v4, "::ffff:10.1.2.3"), "an IPv4 client seen through an IPv6 socket")
        #expect(inside(v4, "10.1.2.3:443"))
        #expect(!inside(v4, "2001:db8::1"))
        #expect(inside(v6, "2001:db8:ffff::1"))
        #expect(inside(v6, "[2001:db8::1]:443"))
        #expect(inside(v6, "2001:db8::1%eth0"))
        #expect(!inside(v6, "2001:db9::1"))
        #expect(!inside(v6, "10.0.0.1"))
        #expect(try #require(IPNetwork("::/0")).contains(try #require(IPNetwork.address("203.0.113.9"))))
        for bad in ["", "unknown", "10.0.0.256", "1.2.3.4:5:6", "[::1"] {
            #expect(IPNetwork.address(bad) == nil, "\(bad)")
        }
    }

    @Test func aKeyWithAnAllowlistAdmitsOnlyItsNetworks() throws {
        var key = KeyCheckState(
            id: "k", name: "n", permissions: PermissionMask(rawValue: 0), enabled: true, expiresAtMS: nil)
        #expect(key.admits(clientAddress: "") && key.admits(clientAddress: "anything"))
        key.allowedNetworks = [try #require(IPNetwork("192.0.2.0/24")), try #require(IPNetwork("2001:db8::/32"))]
        #expect(key.admits(clientAddress: "192.0.2.200"))
        #expect(key.admits(clientAddress: "2001:db8::7"))
        #expect(!key.admits(clientAddress: "198.51.100.1"))
        #expect(!key.admits(clientAddress: ""), "no address, no admission")
    }
}
