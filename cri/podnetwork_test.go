package cri

import "testing"

func TestPodNetworkNames(t *testing.T) {
	for _, tc := range []struct{ cidr, subnet string }{
		{"10.244.1.0/24", "10.244.1.0/24"},
		{"10.244.1.0/24,fd00:10:244:1::/64", "10.244.1.0/24"},
		{" fd00::/64 , 10.0.0.0/16", "fd00::/64"},
	} {
		if got := podSubnet(tc.cidr); got != tc.subnet {
			t.Errorf("podSubnet(%q) = %q, want %q", tc.cidr, got, tc.subnet)
		}
	}
	a, b := PodNetworkBridge("10.244.1.0/24"), PodNetworkBridge("10.244.2.0/24")
	if len(a) > 15 || a == b || a != PodNetworkBridge("10.244.1.0/24") {
		t.Errorf("bridges %q and %q: want stable, distinct Linux interface names (at most 15 characters)", a, b)
	}
}
