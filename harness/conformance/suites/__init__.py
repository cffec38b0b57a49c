"""The conformance suites, by CONFORMANCE.md scenario.

- test_connectivity: 1 (pod→pod same node / across nodes / across segments;
  ICMP, TCP, UDP, HTTP answered by name; pod addresses kept), 2 (node↔pod),
  4 (egress to an outside host, masqueraded)
- test_mtu: 3 (pod MTU per mode; DF ping of exactly the MTU passes, +1 fails)
- test_latency: 29 (TCP request/response p50/p90/p99, pod vs node)
- test_throughput: 28 (iperf3 TCP x1, x4, UDP; pod vs underlay; CPU, retransmits)
- test_slo: 5 (network-ready latency over ≥ 50 pods vs the 5 s SLO),
  6 (route convergence when a node leaves and joins)
- test_encryption: 19 (leak test; negative control in unencrypted modes)
- test_crosssubnet: 22 (direct inside a segment, encapsulated across)
- test_hygiene: 30 (agent logs, underlay errors; "nothing left after down" is
  checked by the plugin or by scripts/conformance.sh)
- test_faults: 6 (agent kill -9 and etcd restart under traffic)
- test_modeswitch: 23 (switch to the matrix's next mode under live flows)
- test_workloads: 31 (a Deployment's rolling update behind a ClusterIP and a NodePort
  under open-loop load: 0 failed requests; rollout time, stale-endpoint window),
  32 (the HPA adds serving replicas under a CPU load step, scales down after its window)
"""
