package cli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func robotStatus(s casarev1.RobotStatus) string {
	return shortEnum(s.String(), "ROBOT_STATUS_")
}

func labels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func (a *app) robotsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "robots", Aliases: []string{"robot"}, Short: "List and inspect robots"}
	var watch bool
	list := &cobra.Command{
		Use:   "list [--watch]",
		Short: "List robots; --watch follows them as they change",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			if watch {
				return a.watchRobots(cmd.Context(), conn)
			}
			out := &casarev1.ListRobotsResponse{}
			req := &casarev1.ListRobotsRequest{PageSize: 1000}
			for {
				res, err := conn.robots.ListRobots(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Robots = append(out.Robots, res.GetRobots()...)
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			return a.print(out, func(w io.Writer) {
				fmt.Fprintln(w, robotHeader)
				for _, r := range out.GetRobots() {
					robotRow(w, r, time.Now())
				}
			})
		},
	}
	list.Flags().BoolVarP(&watch, "watch", "w", false, "after the list, print each robot that changes, until interrupted")
	get := &cobra.Command{
		Use:   "get ID_OR_NAME",
		Short: "Show a robot",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.robots.GetRobot(cmd.Context(), &casarev1.GetRobotRequest{Id: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetRobot(), func(w io.Writer) {
				r := res.GetRobot()
				fmt.Fprintf(w, "Name:\t%s\n", r.GetName())
				fmt.Fprintf(w, "ID:\t%s\n", r.GetId())
				fmt.Fprintf(w, "Status:\t%s\n", robotStatus(r.GetStatus()))
				fmt.Fprintf(w, "Labels:\t%s\n", labels(r.GetLabels()))
				fmt.Fprintf(w, "Capabilities:\t%s\n", dash(strings.Join(r.GetCapabilities(), ",")))
				fmt.Fprintf(w, "Version:\t%s\n", dash(r.GetVersion()))
				if r.GetProtocolVersion() != 0 {
					fmt.Fprintf(w, "Protocol:\t%d\n", r.GetProtocolVersion())
				}
				if p := r.GetProtocolProblem(); p != "" {
					fmt.Fprintf(w, "Problem:\t%s\n", p)
				}
				fmt.Fprintf(w, "OS:\t%s\n", dash(r.GetOs()))
				fmt.Fprintf(w, "Hostname:\t%s\n", dash(r.GetHostname()))
				fmt.Fprintf(w, "Max jobs:\t%d\n", r.GetMaxJobs())
				fmt.Fprintf(w, "Jobs:\t%d of %d slots\n", len(r.GetRunningJobIds()), r.GetMaxJobs())
				for _, id := range r.GetRunningJobIds() {
					fmt.Fprintf(w, "\t%s\n", id)
				}
				fmt.Fprintf(w, "Connected since:\t%s\n", formatTime(r.GetConnectedSince()))
				fmt.Fprintf(w, "Last seen:\t%s\n", formatTime(r.GetLastSeen()))
			})
		},
	}
	drain := &cobra.Command{
		Use:   "drain ID_OR_NAME",
		Short: "Tell a robot to take no new work",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.robots.DrainRobot(cmd.Context(), &casarev1.DrainRobotRequest{Id: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetRobot(), func(w io.Writer) {
				fmt.Fprintf(w, "robot %s is %s\n", res.GetRobot().GetName(), robotStatus(res.GetRobot().GetStatus()))
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete ID_OR_NAME",
		Short: "Delete a robot and revoke its certificate; its connection closes at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.robots.DeleteRobot(cmd.Context(), &casarev1.DeleteRobotRequest{Id: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "robot %s deleted; its certificate is revoked\n", args[0])
			})
		},
	}
	cmd.AddCommand(list, get, drain, del, a.robotsTokenCommand())
	return cmd
}

const robotHeader = "NAME\tID\tSTATUS\tJOBS\tLABELS\tVERSION\tOS\tLAST SEEN"

// robotRow prints a robot; JOBS is the jobs it runs now of its slots, the
// count that makes it BUSY when they are all taken.
func robotRow(w io.Writer, r *casarev1.Robot, now time.Time) {
	fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", r.GetName(), r.GetId(), robotStatus(r.GetStatus()),
		len(r.GetRunningJobIds()), r.GetMaxJobs(), labels(r.GetLabels()), dash(r.GetVersion()), dash(r.GetOs()), age(r.GetLastSeen(), now))
}

// watchRobots prints the robots, then a line per robot that changes, like
// kubectl get -w, until the context ends (Ctrl-C exits 0).
func (a *app) watchRobots(ctx context.Context, conn *connection) error {
	stream, err := conn.robots.WatchRobots(ctx, &casarev1.WatchRobotsRequest{})
	if err != nil {
		return a.apiError(err)
	}
	defer stream.Close()
	names := map[string]string{}
	w := tabwriter.NewWriter(a.env.Stdout, 0, 4, 2, ' ', 0)
	if a.outputFlag == "table" {
		fmt.Fprintln(w, robotHeader)
	}
	for {
		msg, err := stream.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return a.apiError(err)
		}
		if a.outputFlag != "table" {
			if err := a.print(msg, nil); err != nil {
				return err
			}
			continue
		}
		for _, r := range msg.GetRobots() {
			if msg.GetType() == casarev1.WatchEventType_WATCH_EVENT_TYPE_DELETE {
				fmt.Fprintf(w, "%s\t%s\tDELETED\t\t\t\t\n", dash(names[r.GetId()]), r.GetId())
				continue
			}
			names[r.GetId()] = r.GetName()
			robotRow(w, r, time.Now())
		}
		if msg.GetType() != casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT {
			w.Flush()
		}
	}
}

func (a *app) robotsTokenCommand() *cobra.Command {
	token := &cobra.Command{Use: "token", Short: "Enrollment tokens for new robots"}
	var name string
	var labelList []string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --name NAME [--labels k=v,…] [--ttl 1h]",
		Short: "Create a one-time token a new robot enrols with; prints it and the command to run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &casarev1.CreateEnrollmentTokenRequest{Name: name, Labels: map[string]string{}}
			for _, kv := range labelList {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError("--labels: want key=value, got %q", kv)
				}
				req.Labels[k] = v
			}
			if ttl > 0 {
				req.Ttl = durationpb.New(ttl)
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.robots.CreateEnrollmentToken(cmd.Context(), req)
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintln(w, res.GetToken())
				fmt.Fprintf(a.env.Stderr, "one-time token for robot %q, valid until %s; on the robot run:\n  %s\n",
					name, formatTime(res.GetExpiresAt()), res.GetCommand())
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "name the robot gets (required)")
	create.Flags().StringSliceVar(&labelList, "labels", nil, "labels k=v, comma separated")
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	_ = create.MarkFlagRequired("name")
	token.AddCommand(create)
	return token
}
