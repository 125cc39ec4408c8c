package cri

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"testing"

	"github.com/hashicorp/go-hclog"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStreamingURLs: with port 0 the streaming server's URLs name the
// port it bound, which answers; a URL's token serves once.
func TestStreamingURLs(t *testing.T) {
	s := New(nil, Config{Namespace: "k8s.io"}, hclog.NewNullLogger())
	addr, err := s.StartStreaming("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	if _, port, _ := net.SplitHostPort(addr); port == "0" || port == "" {
		t.Fatalf("listening on %q", addr)
	}
	resp, err := s.stream.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: []string{"true"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(resp.Url)
	if err != nil || u.Host != addr {
		t.Fatalf("exec URL %q (%v), want one on %s", resp.Url, err, addr)
	}
	pf, err := s.stream.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p", Port: []int32{80}})
	if err != nil || pf.Url == resp.Url {
		t.Fatalf("port-forward URL %v, %v", pf, err)
	}
	// A plain GET is no stream upgrade: refused, and it uses the token up.
	for i, want := range []int{http.StatusBadRequest, http.StatusNotFound} {
		r, err := http.Get(resp.Url)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("GET %d: %s, want %d", i, r.Status, want)
		}
	}
	if _, err := New(nil, Config{}, hclog.NewNullLogger()).StartStreaming(addr); err == nil {
		t.Error("a second server on the same port started")
	}
}
