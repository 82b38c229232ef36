package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect/v2"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func (a *app) jobsLogsCommand() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs ID [--follow]",
		Short: "Print a job's log; --follow keeps printing new lines until the job ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.streamLogs(cmd.Context(), args[0], follow)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "F", false, "follow new lines until the job ends")
	return cmd
}

// streamLogs prints a job's log lines as they come: as text, or one JSON
// object per line with -o json.
func (a *app) streamLogs(ctx context.Context, jobID string, follow bool) error {
	conn, err := a.connect()
	if err != nil {
		return err
	}
	stream, err := conn.jobs.StreamJobLogs(ctx, &casarev1.StreamJobLogsRequest{JobId: jobID, Follow: follow})
	if err != nil {
		return a.apiError(err)
	}
	defer stream.Close()
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if connect.CodeOf(err) == connect.CodeCanceled {
				return nil
			}
			return a.apiError(err)
		}
		for _, l := range msg.GetLines() {
			a.printLogLine(l)
		}
	}
}

func (a *app) printLogLine(l *casarev1.LogLine) {
	if a.outputFlag == "json" {
		b, _ := protojson.Marshal(l)
		fmt.Fprintf(a.env.Stdout, "%s\n", b)
		return
	}
	step := l.GetStepId()
	if step == "" {
		step = "-"
	}
	fmt.Fprintf(a.env.Stdout, "%s %-5s %s: %s\n", formatTime(l.GetTime()), strings.ToUpper(l.GetLevel()), step, l.GetMessage())
}

func (a *app) jobsExplainCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "explain ID",
		Short: "Say why a job is not running: for each robot, what keeps it from taking the job",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.jobs.ExplainJob(cmd.Context(), &casarev1.ExplainJobRequest{Id: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				j := res.GetJob()
				fmt.Fprintf(w, "Job %s is %s: %s\n", j.GetId(), jobStatus(j.GetStatus()), res.GetSummary())
				if len(res.GetRobots()) == 0 {
					return
				}
				fmt.Fprintln(w)
				fmt.Fprintln(w, "ROBOT\tCAN TAKE IT\tWHY NOT")
				for _, r := range res.GetRobots() {
					can := "no"
					if r.GetEligible() {
						can = "yes"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\n", r.GetRobotName(), can, dash(strings.Join(r.GetReasons(), "; ")))
				}
			})
		},
	}
}
