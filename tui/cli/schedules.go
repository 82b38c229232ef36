package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func overlap(p casarev1.OverlapPolicy) string {
	if p == casarev1.OverlapPolicy_OVERLAP_POLICY_UNSPECIFIED {
		return "skip"
	}
	return strings.ToLower(shortEnum(p.String(), "OVERLAP_POLICY_"))
}

// enumFlag turns a short lower-case name (queue_one, run-all, high) into
// the enum's value, or says which names there are.
func enumFlag(flag, value, prefix string, values map[string]int32) (int32, error) {
	name := prefix + strings.ToUpper(strings.ReplaceAll(value, "-", "_"))
	v, ok := values[name]
	if !ok || v == 0 {
		var names []string
		for n, v := range values {
			if v != 0 {
				names = append(names, strings.ToLower(strings.TrimPrefix(n, prefix)))
			}
		}
		slices.Sort(names)
		return 0, usageError("%s: want one of %s, got %q", flag, strings.Join(names, ", "), value)
	}
	return v, nil
}

// scheduleFlags are the flags that describe a schedule; those given
// override the -f file.
type scheduleFlags struct {
	file, workflow, cron, tz, overlap, misfire, priority, description string
	start, end                                                        string
	inputs, calendars                                                 []string
	version, maxAttempts, misfireLimit                                int32
	paused                                                            bool
}

func (o *scheduleFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "schedule file, JSON or YAML (- for stdin); flags given override it")
	f.StringVar(&o.workflow, "workflow", "", "stored workflow to run")
	f.Int32Var(&o.version, "workflow-version", 0, "stored version to run (default: the latest at each fire)")
	f.StringVar(&o.cron, "cron", "", "cron spec: 5 fields, 6 with seconds first, or @hourly, @daily, @every 5m")
	f.StringVar(&o.tz, "tz", "", "IANA time zone of the cron spec, e.g. Europe/Berlin (default UTC)")
	f.StringArrayVar(&o.inputs, "input", nil, "input as key=value; the value is JSON when it parses as JSON, else a string (repeatable)")
	f.StringVar(&o.overlap, "overlap", "", "when the previous job still runs: skip (default), allow, queue_one or cancel_previous")
	f.StringVar(&o.misfire, "misfire", "", "fires missed while no scheduler ran: skip (default), run_once or run_all")
	f.Int32Var(&o.misfireLimit, "misfire-limit", 0, "most missed fires run_all makes up for (default 10)")
	f.StringArrayVar(&o.calendars, "calendar", nil, "calendar that restricts the fires (repeatable)")
	f.StringVar(&o.priority, "priority", "", "priority of the jobs: low, normal, high or critical")
	f.Int32Var(&o.maxAttempts, "max-attempts", 0, "attempts before a job fails (default: the server's)")
	f.StringVar(&o.start, "start", "", "no fire before this time, RFC 3339")
	f.StringVar(&o.end, "end", "", "no fire after this time, RFC 3339")
	f.BoolVar(&o.paused, "paused", false, "create it paused")
	f.StringVar(&o.description, "description", "", "what the schedule is for")
}

// shortEnums are the fields of a schedule file that may name an enum
// value by its short name, and the prefix the API's name adds.
var shortEnums = map[string]string{
	"overlap_policy": "OVERLAP_POLICY_", "overlapPolicy": "OVERLAP_POLICY_",
	"misfire_policy": "MISFIRE_POLICY_", "misfirePolicy": "MISFIRE_POLICY_",
	"priority": "JOB_PRIORITY_",
}

// readSchedule reads a schedule file; overlap_policy: queue_one and the
// like are taken as well as the API's enum names.
func (a *app) readSchedule(path string) (*casarev1.Schedule, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(a.env.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, usageError("-f: %v", err)
	}
	raw, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, usageError("%s: %v", path, err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, usageError("%s: want a mapping of schedule fields: %v", path, err)
	}
	for key, prefix := range shortEnums {
		if v, ok := fields[key].(string); ok && !strings.HasPrefix(v, prefix) {
			fields[key] = prefix + strings.ToUpper(strings.ReplaceAll(v, "-", "_"))
		}
	}
	if raw, err = json.Marshal(fields); err != nil {
		return nil, usageError("%s: %v", path, err)
	}
	s := &casarev1.Schedule{}
	if err := protojson.Unmarshal(raw, s); err != nil {
		return nil, usageError("%s: %v", path, err)
	}
	return s, nil
}

// apply sets on s what the file and the flags given say.
func (o *scheduleFlags) apply(a *app, cmd *cobra.Command, s *casarev1.Schedule) error {
	if o.file != "" {
		fromFile, err := a.readSchedule(o.file)
		if err != nil {
			return err
		}
		name := s.GetName()
		s.Reset()
		proto.Merge(s, fromFile)
		if name != "" {
			s.Name = name
		}
	}
	changed := cmd.Flags().Changed
	if changed("workflow") {
		s.WorkflowName = o.workflow
	}
	if changed("workflow-version") {
		s.WorkflowVersion = o.version
	}
	if changed("cron") {
		s.Cron = o.cron
	}
	if changed("tz") {
		s.TimeZone = o.tz
	}
	if changed("input") {
		inputs, err := parseInputs(o.inputs)
		if err != nil {
			return err
		}
		s.Inputs = inputs
	}
	if changed("overlap") {
		v, err := enumFlag("--overlap", o.overlap, "OVERLAP_POLICY_", casarev1.OverlapPolicy_value)
		if err != nil {
			return err
		}
		s.OverlapPolicy = casarev1.OverlapPolicy(v)
	}
	if changed("misfire") {
		v, err := enumFlag("--misfire", o.misfire, "MISFIRE_POLICY_", casarev1.MisfirePolicy_value)
		if err != nil {
			return err
		}
		s.MisfirePolicy = casarev1.MisfirePolicy(v)
	}
	if changed("misfire-limit") {
		s.MisfireLimit = o.misfireLimit
	}
	if changed("calendar") {
		s.Calendars = o.calendars
	}
	if changed("priority") {
		v, err := enumFlag("--priority", o.priority, "JOB_PRIORITY_", casarev1.JobPriority_value)
		if err != nil {
			return err
		}
		s.Priority = casarev1.JobPriority(v)
	}
	if changed("max-attempts") {
		s.MaxAttempts = o.maxAttempts
	}
	for _, t := range []struct {
		flag, value string
		into        **timestamppb.Timestamp
	}{{"start", o.start, &s.StartTime}, {"end", o.end, &s.EndTime}} {
		if !changed(t.flag) {
			continue
		}
		if t.value == "" {
			*t.into = nil
			continue
		}
		at, err := time.Parse(time.RFC3339, t.value)
		if err != nil {
			return usageError("--%s: want a time such as 2027-01-01T00:00:00Z, got %q", t.flag, t.value)
		}
		*t.into = timestamppb.New(at)
	}
	if changed("paused") {
		s.Paused = o.paused
	}
	if changed("description") {
		s.Description = o.description
	}
	return nil
}

func scheduleTable(w io.Writer, list []*casarev1.Schedule) {
	fmt.Fprintln(w, "NAME\tWORKFLOW\tCRON\tTIME ZONE\tOVERLAP\tPAUSED\tNEXT FIRE\tLAST FIRE\tLAST JOB\tSTATUS")
	for _, s := range list {
		status := "-"
		if s.GetLastJobId() != "" {
			status = jobStatus(s.GetLastJobStatus())
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\t%s\n", s.GetName(), s.GetWorkflowName(), s.GetCron(), dash(s.GetTimeZone()),
			overlap(s.GetOverlapPolicy()), s.GetPaused(), formatTime(s.GetNextFireTime()), formatTime(s.GetLastFireTime()),
			dash(s.GetLastJobId()), status)
	}
}

func (a *app) schedulesCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "schedules", Aliases: []string{"schedule"}, Short: "Run stored workflows on a cron schedule"}

	var createFlags scheduleFlags
	create := &cobra.Command{
		Use:   "create NAME (--workflow W --cron SPEC | -f FILE) [--tz ZONE] [--input k=v]... [--overlap P] [--calendar C]...",
		Short: "Create a schedule",
		Example: "  casarectl schedules create nightly --workflow invoice-sync --cron '0 2 * * 1-5' --tz Europe/Berlin \\\n" +
			"      --input url=https://erp.example.com --overlap skip --calendar holidays\n" +
			"  casarectl schedules create -f nightly.yaml",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s := &casarev1.Schedule{}
			if len(args) == 1 {
				s.Name = args[0]
			}
			if err := createFlags.apply(a, cmd, s); err != nil {
				return err
			}
			if s.GetName() == "" {
				return usageError("create: name the schedule: casarectl schedules create NAME, or name: in the file")
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.schedules.CreateSchedule(cmd.Context(), &casarev1.CreateScheduleRequest{Schedule: s})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetSchedule(), func(w io.Writer) {
				fmt.Fprintf(w, "schedule %s created; next fire %s\n", res.GetSchedule().GetName(), formatTime(res.GetSchedule().GetNextFireTime()))
			})
		},
	}
	createFlags.add(create)

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a schedule, its last job and its next fire",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.schedules.GetSchedule(cmd.Context(), &casarev1.GetScheduleRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			s := res.GetSchedule()
			return a.print(s, func(w io.Writer) {
				fmt.Fprintf(w, "Name:\t%s\nWorkflow:\t%s\nCron:\t%s\nTime zone:\t%s\nOverlap:\t%s\nPaused:\t%t\nCalendars:\t%s\nNext fire:\t%s\nLast fire:\t%s\nLast job:\t%s\n",
					s.GetName(), s.GetWorkflowName(), s.GetCron(), dash(s.GetTimeZone()), overlap(s.GetOverlapPolicy()), s.GetPaused(),
					dash(strings.Join(s.GetCalendars(), ", ")), formatTime(s.GetNextFireTime()), formatTime(s.GetLastFireTime()), dash(s.GetLastJobId()))
				if s.GetLastJobId() != "" {
					fmt.Fprintf(w, "Last job status:\t%s\n", jobStatus(s.GetLastJobStatus()))
				}
			})
		},
	}

	var workflowFilter string
	list := &cobra.Command{
		Use:   "list [--workflow W]",
		Short: "List schedules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListSchedulesResponse{}
			req := &casarev1.ListSchedulesRequest{PageSize: 1000, WorkflowName: workflowFilter}
			for {
				res, err := conn.schedules.ListSchedules(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Schedules = append(out.Schedules, res.GetSchedules()...)
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			return a.print(out, func(w io.Writer) { scheduleTable(w, out.GetSchedules()) })
		},
	}
	list.Flags().StringVar(&workflowFilter, "workflow", "", "only the schedules of this workflow")

	var updateFlags scheduleFlags
	update := &cobra.Command{
		Use:   "update NAME [-f FILE] [flags of create]",
		Short: "Change a schedule: the flags given (or the file) replace what they name",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			cur, err := conn.schedules.GetSchedule(cmd.Context(), &casarev1.GetScheduleRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			s := cur.GetSchedule()
			if err := updateFlags.apply(a, cmd, s); err != nil {
				return err
			}
			s.Name = args[0]
			res, err := conn.schedules.UpdateSchedule(cmd.Context(), &casarev1.UpdateScheduleRequest{Schedule: s})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetSchedule(), func(w io.Writer) {
				fmt.Fprintf(w, "schedule %s updated; next fire %s\n", res.GetSchedule().GetName(), formatTime(res.GetSchedule().GetNextFireTime()))
			})
		},
	}
	updateFlags.add(update)

	simple := func(use, short, done string, call func(cmd *cobra.Command, conn *connection, name string) (*casarev1.Schedule, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				conn, err := a.connect()
				if err != nil {
					return err
				}
				s, err := call(cmd, conn, args[0])
				if err != nil {
					return a.apiError(err)
				}
				return a.print(s, func(w io.Writer) {
					fmt.Fprintf(w, "schedule %s %s; next fire %s\n", args[0], done, formatTime(s.GetNextFireTime()))
				})
			},
		}
	}
	pause := simple("pause", "Stop a schedule firing until it is resumed", "paused", func(cmd *cobra.Command, conn *connection, name string) (*casarev1.Schedule, error) {
		res, err := conn.schedules.PauseSchedule(cmd.Context(), &casarev1.PauseScheduleRequest{Name: name})
		return res.GetSchedule(), err
	})
	resume := simple("resume", "Let a paused schedule fire again from now on", "resumed", func(cmd *cobra.Command, conn *connection, name string) (*casarev1.Schedule, error) {
		res, err := conn.schedules.ResumeSchedule(cmd.Context(), &casarev1.ResumeScheduleRequest{Name: name})
		return res.GetSchedule(), err
	})

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a schedule; the jobs it made stay",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.schedules.DeleteSchedule(cmd.Context(), &casarev1.DeleteScheduleRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) { fmt.Fprintf(w, "schedule %s deleted\n", args[0]) })
		},
	}

	trigger := &cobra.Command{
		Use:   "trigger NAME",
		Short: "Run a schedule's workflow now, whatever its cron spec and pause say",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.schedules.TriggerSchedule(cmd.Context(), &casarev1.TriggerScheduleRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetJob(), func(w io.Writer) {
				fmt.Fprintf(w, "job %s submitted (%s)\n", res.GetJob().GetId(), jobStatus(res.GetJob().GetStatus()))
			})
		},
	}

	var count int32
	var after string
	var previewFlags scheduleFlags
	next := &cobra.Command{
		Use:   "next (NAME | --cron SPEC [--tz ZONE] [--calendar C]... | -f FILE) [-n N]",
		Short: "Show the next fire times of a schedule, or of a spec before creating it",
		Example: "  casarectl schedules next nightly -n 10\n" +
			"  casarectl schedules next --cron '30 2 * * *' --tz America/New_York -n 5",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &casarev1.PreviewScheduleRequest{Count: count}
			if len(args) == 1 {
				req.Source = &casarev1.PreviewScheduleRequest_Name{Name: args[0]}
			} else {
				s := &casarev1.Schedule{}
				if err := previewFlags.apply(a, cmd, s); err != nil {
					return err
				}
				if s.GetCron() == "" {
					return usageError("next: name a schedule, or give --cron or -f FILE")
				}
				req.Source = &casarev1.PreviewScheduleRequest_Schedule{Schedule: s}
			}
			if after != "" {
				at, err := time.Parse(time.RFC3339, after)
				if err != nil {
					return usageError("--after: want a time such as 2027-01-01T00:00:00Z, got %q", after)
				}
				req.After = timestamppb.New(at)
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.schedules.PreviewSchedule(cmd.Context(), req)
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				for _, t := range res.GetFireTimes() {
					fmt.Fprintln(w, formatTime(t))
				}
			})
		},
	}
	next.Flags().Int32VarP(&count, "count", "n", 10, "how many fire times")
	next.Flags().StringVar(&after, "after", "", "fire times after this time, RFC 3339 (default now)")
	previewFlags.add(next)

	cmd.AddCommand(create, get, list, update, del, pause, resume, trigger, next)
	return cmd
}
