package buildinfo

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestGetFillsWhatTheLinkerDidNotSet(t *testing.T) {
	info := Get()
	// go test links no -X values and builds no VCS stamp into test binaries.
	if info.Version == "" || info.Revision == "" || info.GoVersion != runtime.Version() {
		t.Fatalf("Get() = %+v; want a version, a revision and %s", info, runtime.Version())
	}
}

func TestLinkedVersionWins(t *testing.T) {
	oldV, oldR := version, revision
	t.Cleanup(func() { version, revision = oldV, oldR })
	version, revision = "v1.2.3-4-gabcdef", "abcdef123456"
	root := &cobra.Command{Use: "casare-thing", PersistentPreRunE: func(*cobra.Command, []string) error {
		t.Error("version ran the root's checks")
		return nil
	}}
	AddTo(root)
	want := "casare-thing v1.2.3-4-gabcdef (revision abcdef123456, " + runtime.Version() + ")\n"
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("%s printed %q, want %q", strings.Join(args, " "), out.String(), want)
		}
	}
}
