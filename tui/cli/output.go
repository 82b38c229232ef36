package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	dashboard "github.com/casarerpa/casare/tui/dash"
)

// print writes msg as JSON or YAML, or with table for -o table.
func (a *app) print(msg proto.Message, table func(w io.Writer)) error {
	switch a.outputFlag {
	case "json", "yaml":
		raw, err := protojson.Marshal(msg)
		if err != nil {
			return &exitError{code: ExitError, err: err}
		}
		// protojson varies its spacing on purpose; scripts and diffs want
		// the same bytes for the same message.
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return &exitError{code: ExitError, err: err}
		}
		b := buf.Bytes()
		if a.outputFlag == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return &exitError{code: ExitError, err: err}
			}
		}
		a.env.Stdout.Write(b)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			fmt.Fprintln(a.env.Stdout)
		}
	default:
		w := tabwriter.NewWriter(a.env.Stdout, 0, 4, 2, ' ', 0)
		table(w)
		w.Flush()
	}
	return nil
}

// shortEnum drops the enum's type prefix: JOB_STATUS_PENDING → PENDING.
func shortEnum(name, prefix string) string {
	return strings.TrimPrefix(name, prefix)
}

func jobStatus(s casarev1.JobStatus) string {
	return shortEnum(s.String(), "JOB_STATUS_")
}

func priority(p casarev1.JobPriority) string {
	return shortEnum(p.String(), "JOB_PRIORITY_")
}

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().Local().Format(time.RFC3339)
}

// age says how long ago ts was, the way kubectl does: 5s, 3m, 2h, 4d.
func age(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return "-"
	}
	return dashboard.ShortDuration(now.Sub(ts.AsTime()))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
