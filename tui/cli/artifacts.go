package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func (a *app) jobsArtifactsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "artifacts JOB_ID",
		Short:   "List the files a job saved (artifact.save, browser.screenshot)",
		Example: "  casarectl jobs artifacts 0193a7c2-…\n  casarectl jobs artifacts 0193a7c2-… -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.jobs.ListJobArtifacts(cmd.Context(), &casarev1.ListJobArtifactsRequest{JobId: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tTYPE\tSIZE\tATTEMPT\tAGE\tSHA256")
				now := time.Now()
				for _, art := range res.GetArtifacts() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", art.GetName(), dash(art.GetContentType()), byteSize(art.GetSize()),
						art.GetAttempt(), age(art.GetCreatedAt(), now), shortDigest(art.GetSha256()))
				}
			})
		},
	}
}

func (a *app) jobsArtifactCommand() *cobra.Command {
	var file string
	var force bool
	cmd := &cobra.Command{
		Use:   "artifact JOB_ID NAME [-f FILE] [--force]",
		Short: "Download a file a job saved",
		Example: "  casarectl jobs artifact 0193a7c2-… screenshot-1.png\n" +
			"  casarectl jobs artifact 0193a7c2-… report.csv -f - | head",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.jobs.GetJobArtifact(cmd.Context(), &casarev1.GetJobArtifactRequest{JobId: args[0], Name: args[1]})
			if err != nil {
				return a.apiError(err)
			}
			data := res.GetData()
			if want := res.GetArtifact().GetSha256(); want != "" {
				if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != want {
					return &exitError{code: ExitError, err: fmt.Errorf("artifact %q arrived damaged: its bytes do not match its SHA-256", args[1])}
				}
			}
			if file == "-" {
				_, err := a.env.Stdout.Write(data)
				return err
			}
			path := file
			if path == "" {
				// The name is a plain file name (the control plane takes no
				// other); Base keeps it so should that ever change.
				path = filepath.Base(res.GetArtifact().GetName())
				if path == "." || path == ".." || path == string(filepath.Separator) {
					return usageError("artifact %q has no usable file name; pass -f FILE", args[1])
				}
			}
			if err := writeNew(path, data, force); err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stderr, "wrote %s (%s) to %s\n", res.GetArtifact().GetName(), byteSize(int64(len(data))), path)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "where to write it (default ./NAME; - for stdout)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite FILE when it exists")
	return cmd
}

// writeNew writes data to path, refusing to replace a file unless force.
func writeNew(path string, data []byte, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if errors.Is(err, os.ErrExist) {
		return usageError("%s exists; pass --force to overwrite it, or -f another file", path)
	}
	if err != nil {
		return &exitError{code: ExitError, err: err}
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &exitError{code: ExitError, err: fmt.Errorf("write %s: %w", path, err)}
	}
	return nil
}

// byteSize says a size the way people read it: 512 B, 1.5 KiB, 3.2 MiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// shortDigest shortens a hex digest for a table, as git shortens commits.
func shortDigest(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return dash(s)
}
