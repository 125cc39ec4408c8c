package critest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A ginkgo JSON report as critest writes it, cut down: a suite node, one
// spec of each end state, a skip with and one without a reason.
const sampleReport = `[{"SuiteDescription":"CRI validation","SuiteSucceeded":false,"SpecReports":[
 {"LeafNodeType":"BeforeSuite","LeafNodeText":"","State":"passed"},
 {"ContainerHierarchyTexts":["[k8s.io] PodSandbox","runtime should support basic operations"],"LeafNodeType":"It","LeafNodeText":"should run","State":"passed","RunTime":2000000000},
 {"ContainerHierarchyTexts":["[k8s.io] Image Manager"],"LeafNodeType":"It","LeafNodeText":"public image with digest","State":"failed","Failure":{"Message":"failed to pull image\nUnexpected error: test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"}},
 {"ContainerHierarchyTexts":["[k8s.io] AppArmor"],"LeafNodeType":"It","LeafNodeText":"should fail","State":"skipped","Failure":{"Message":"AppArmor is disabled on this host"}},
 {"ContainerHierarchyTexts":["[k8s.io] Image"],"LeafNodeType":"It","LeafNodeText":"benchmark about listing Image","State":"skipped"},
 {"LeafNodeType":"AfterSuite","LeafNodeText":"","State":"failed","Failure":{"Message":"cleanup failed"}}
]}]`

func TestParseReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(path, []byte(sampleReport), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := parseReport(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []spec{
		{Name: "[k8s.io] PodSandbox runtime should support basic operations should run", State: "passed", Took: 2e9},
		{Name: "[k8s.io] Image Manager public image with digest", State: "failed", Reason: "failed to pull image"},
		{Name: "[k8s.io] AppArmor should fail", State: "skipped", Reason: "AppArmor is disabled on this host"},
		{Name: "[k8s.io] Image benchmark about listing Image", State: "skipped", Reason: filteredReason},
	}
	if len(r.Specs) != len(want) {
		t.Fatalf("specs: %+v, want %+v", r.Specs, want)
	}
	for i := range want {
		got := r.Specs[i]
		got.Message = ""
		if got != want[i] {
			t.Errorf("spec %d: %+v, want %+v", i, r.Specs[i], want[i])
		}
	}
	if len(r.Setup) != 1 || r.Setup[0].Name != "AfterSuite" || r.Setup[0].Reason != "cleanup failed" {
		t.Errorf("setup: %+v, want the failed AfterSuite alone", r.Setup)
	}
	sum := r.summary("containerd")
	lines := strings.Split(sum, "\n")
	if lines[0] != "critest "+criToolsVersion+" against containerd: 4 specs, 1 passed, 1 failed, 2 skipped" {
		t.Errorf("summary's first line: %q", lines[0])
	}
	// Failures (the suite's first), then skips; passed specs are counted only.
	var states []string
	for _, l := range lines[3:] {
		if f := strings.Fields(l); len(f) > 0 {
			states = append(states, f[0])
		}
	}
	if strings.Join(states, " ") != "failed failed skipped skipped" {
		t.Errorf("summary rows by state: %v\n%s", states, sum)
	}
	if strings.Contains(sum, "should run") {
		t.Errorf("summary lists a passed spec:\n%s", sum)
	}
}

func TestParseReportBad(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"empty.json":   `[]`,
		"notjson.json": `<html>`,
		"nospecs.json": `[{"SpecReports":[{"LeafNodeType":"BeforeSuite","State":"failed"}]}]`,
		"missing.json": "",
	} {
		path := filepath.Join(dir, name)
		if text != "" {
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := parseReport(path); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestAllowedFailure(t *testing.T) {
	for _, c := range []struct {
		reason string
		want   bool
	}{
		{"failed to pull image \"gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf\"", true},
		{"failed to create PodSandbox", false},
	} {
		if got := allowedFailure(spec{State: "failed", Message: "failed to pull image\nUnexpected error: " + c.reason}); got != c.want {
			t.Errorf("allowedFailure(%q) = %v", c.reason, got)
		}
	}
}

func TestRepoPath(t *testing.T) {
	for ref, want := range map[string][2]string{
		"registry.k8s.io/e2e-test-images/busybox:1.29-2": {"e2e-test-images/busybox", "1.29-2"},
		"gcr.io/k8s-staging-cri-tools/test-image-tags:1": {"k8s-staging-cri-tools/test-image-tags", "1"},
		"registry.k8s.io/pause:3.9":                      {"pause", "3.9"},
	} {
		if repo, tag := repoPath(ref); repo != want[0] || tag != want[1] {
			t.Errorf("repoPath(%q) = %q, %q; want %q, %q", ref, repo, tag, want[0], want[1])
		}
	}
}
