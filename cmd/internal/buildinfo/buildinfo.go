// Package buildinfo says which build of CasareRPA a binary is. The Makefile
// sets the version from `git describe --tags --always --dirty` and the
// revision with -ldflags; a plain `go build` falls back to what the Go
// toolchain stamped into the binary.
package buildinfo

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set at link time:
//
//	-X github.com/casarerpa/casare/cmd/internal/buildinfo.version=v1.2.3
//	-X github.com/casarerpa/casare/cmd/internal/buildinfo.revision=abc1234
var (
	version  string
	revision string
)

// Info is a binary's build.
type Info struct {
	Version   string
	Revision  string
	GoVersion string
}

// Get returns this binary's build. Without link-time values the version is
// the module's (a `go install …@v1.2.3` build) or "dev", and the revision
// is the VCS revision go build stamped, if any.
func Get() Info {
	info := Info{Version: version, Revision: revision, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return fill(info)
	}
	if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		info.Version = bi.Main.Version
	}
	if info.Revision == "" {
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(info.Revision) > 12 {
			info.Revision = info.Revision[:12]
		}
		if dirty && info.Revision != "" {
			info.Revision += "-dirty"
		}
	}
	return fill(info)
}

func fill(info Info) Info {
	if info.Version == "" {
		info.Version = "dev"
	}
	if info.Revision == "" {
		info.Revision = "unknown"
	}
	return info
}

// String is the one line --version prints.
func (i Info) String() string {
	return fmt.Sprintf("%s (revision %s, %s)", i.Version, i.Revision, i.GoVersion)
}

// AddTo gives a cobra root command --version and a version subcommand, both
// printing "NAME VERSION (revision R, goX)".
func AddTo(root *cobra.Command) {
	info := Get()
	root.Version = info.String()
	root.SetVersionTemplate(root.Name() + " {{.Version}}\n")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
		// The version is worth printing even when the configuration the
		// root command checks is broken.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			Print(cmd.OutOrStdout(), root.Name(), info)
			return nil
		},
	})
}

// Print writes the version line of the binary name.
func Print(w io.Writer, name string, info Info) {
	fmt.Fprintf(w, "%s %s\n", name, info)
}
