import CordonCore
import Testing

/// `Decision.verifyChain` runs on the agent's own file and on whatever an agent uploads to the
/// server, so it must report every kind of damage and never trap on numbers from the wire.
@Suite struct DecisionChainTests {
    func entry(_ sequence: Int64, after previous: String, reason: String = "r") -> Decision {
        var d = Decision(sequence: sequence, id: "id-\(sequence)", action: "isolate", operator: "ivy", reason: reason, backend: "nftables",
                         policy: "p", policyDigest: ContentDigest.hex("p"), managementWhitelist: [], whitelist: "", appliedAt: 1_700_000_000,
                         outcome: "success", previousHash: previous, hash: "", format: Decision.currentFormat)
        d.hash = ContentDigest.hex(Decision.chained(d))
        return d
    }

    func chain(_ count: Int) -> [Decision] {
        var entries: [Decision] = []
        for sequence in 1...Int64(count) { entries.append(entry(sequence, after: entries.last?.hash ?? "")) }
        return entries
    }

    @Test("an intact chain has no problems, also when checked after the entry before it")
    func intact() {
        let entries = chain(4)
        #expect(Decision.verifyChain(entries).isEmpty)
        #expect(Decision.verifyChain(Array(entries[2...]), after: entries[1]).isEmpty)
    }

    @Test("a gap, a broken link and an altered entry are each named")
    func damage() {
        var entries = chain(4)
        let gap = Decision.verifyChain([entries[0], entries[2]])
        #expect(gap.contains { $0.contains("entries 2-2 are missing") }, "\(gap)")
        entries[2].reason = "rewritten"
        let altered = Decision.verifyChain(entries)
        #expect(altered == ["entry 3 (isolate by ivy, id id-3) was altered: its hash does not match its fields"], "\(altered)")
        let relinked = entry(2, after: "not the hash of entry 1")
        #expect(Decision.verifyChain([entries[0], relinked]).contains { $0.contains("does not link") })
    }

    @Test("sequences at the ends of Int64, repeated or going back, are problems, not a trap")
    func extremeSequences() {
        let first = entry(1, after: "")
        for sequence in [Int64.max, Int64.min, 0, 1, -1] {
            let problems = Decision.verifyChain([entry(sequence, after: first.hash)], after: first)
            #expect(!problems.isEmpty, "sequence \(sequence)")
        }
        let top = entry(.max, after: "")
        #expect(Decision.verifyChain([entry(.min, after: top.hash)], after: top).contains { $0.contains("out of order") })
        #expect(Decision.verifyChain([entry(.max, after: "")], after: nil).contains { $0.contains("are missing") })
    }
}
