package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/agent/workflow/builtin"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func (a *app) jobsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Aliases: []string{"job"}, Short: "Submit, follow, list and cancel jobs"}
	cmd.AddCommand(a.jobsSubmitCommand(), a.jobsGetCommand(), a.jobsListCommand(), a.jobsCancelCommand(),
		a.jobsLogsCommand(), a.jobsExplainCommand(), a.jobsArtifactsCommand(), a.jobsArtifactCommand())
	return cmd
}

type submitOptions struct {
	file, workflowName, priority, idempotencyKey string
	version, maxAttempts                         int32
	inputs, capabilities, labels                 []string
	jobTimeout, waitTimeout                      time.Duration
	wait, follow                                 bool
}

func (a *app) jobsSubmitCommand() *cobra.Command {
	var o submitOptions
	cmd := &cobra.Command{
		Use:   "submit (-f FILE | --workflow NAME) [--input k=v]... [--wait [--follow] [--timeout D]]",
		Short: "Submit a job from a workflow file or a stored workflow",
		Example: "  casarectl jobs submit -f invoice-sync.yaml --input url=https://erp.example.com --wait\n" +
			"  casarectl jobs submit --workflow invoice-sync --priority high --idempotency-key nightly-2026-11-23",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := a.submitRequest(&o)
			if err != nil {
				return err
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.jobs.SubmitJob(cmd.Context(), req)
			if err != nil {
				return a.apiError(err)
			}
			if res.GetExisting() {
				fmt.Fprintf(a.env.Stderr, "job %s already exists for idempotency key %q\n", res.GetJob().GetId(), o.idempotencyKey)
			}
			if !o.wait && !o.follow {
				return a.printJob(res.GetJob())
			}
			if !o.follow {
				return a.waitForJob(cmd.Context(), res.GetJob(), o.waitTimeout)
			}
			// The log goes to stdout as it comes; the job's end follows it.
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			logsDone := make(chan error, 1)
			go func() { logsDone <- a.streamLogs(ctx, res.GetJob().GetId(), true) }()
			err = a.waitForJob(cmd.Context(), res.GetJob(), o.waitTimeout)
			if err == nil || isExit(err, ExitFailed) {
				// The job ended: its log ends too, with its last line.
				select {
				case <-logsDone:
				case <-time.After(5 * time.Second):
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "workflow file, JSON or YAML (- for stdin)")
	f.StringVar(&o.workflowName, "workflow", "", "name of a stored workflow to run")
	f.Int32Var(&o.version, "version", 0, "stored workflow version (default the latest)")
	f.StringArrayVar(&o.inputs, "input", nil, "input as key=value; the value is JSON when it parses as JSON, else a string (repeatable)")
	f.StringVar(&o.priority, "priority", "", "low, normal, high or critical")
	f.Int32Var(&o.maxAttempts, "max-attempts", 0, "attempts before the job fails (default the server's)")
	f.DurationVar(&o.jobTimeout, "job-timeout", 0, "time limit for one attempt")
	f.StringVar(&o.idempotencyKey, "idempotency-key", "", "submitting again with the same key returns the first job")
	f.StringArrayVar(&o.capabilities, "require-capability", nil, "capability the robot must have (repeatable)")
	f.StringArrayVar(&o.labels, "require-label", nil, "label k=v the robot must have (repeatable)")
	f.BoolVar(&o.wait, "wait", false, "follow the job to its end; exit 0 if it succeeded, 1 if it failed or was cancelled")
	f.BoolVar(&o.follow, "follow", false, "with --wait (implied), print the job's log lines as they come")
	f.DurationVar(&o.waitTimeout, "timeout", 0, "with --wait, give up after this long (exit 2); 0 waits forever")
	return cmd
}

func (a *app) submitRequest(o *submitOptions) (*casarev1.SubmitJobRequest, error) {
	req := &casarev1.SubmitJobRequest{
		MaxAttempts:    o.maxAttempts,
		IdempotencyKey: o.idempotencyKey,
	}
	switch {
	case o.file != "" && o.workflowName != "":
		return nil, usageError("use -f FILE or --workflow NAME, not both")
	case o.file != "":
		if o.version != 0 {
			return nil, usageError("--version applies only to --workflow")
		}
		wf, err := a.readWorkflow(o.file)
		if err != nil {
			return nil, err
		}
		req.Source = &casarev1.SubmitJobRequest_Workflow{Workflow: wf}
	case o.workflowName != "":
		req.Source = &casarev1.SubmitJobRequest_WorkflowName{WorkflowName: o.workflowName}
		req.WorkflowVersion = o.version
	default:
		return nil, usageError("say what to run: -f FILE or --workflow NAME")
	}
	inputs, err := parseInputs(o.inputs)
	if err != nil {
		return nil, err
	}
	req.Inputs = inputs
	if o.priority != "" {
		p, ok := casarev1.JobPriority_value["JOB_PRIORITY_"+strings.ToUpper(o.priority)]
		if !ok || p == 0 {
			return nil, usageError("--priority: want low, normal, high or critical, got %q", o.priority)
		}
		req.Priority = casarev1.JobPriority(p)
	}
	if o.jobTimeout > 0 {
		req.Timeout = durationpb.New(o.jobTimeout)
	}
	if len(o.capabilities) > 0 || len(o.labels) > 0 {
		req.Requires = &casarev1.Requirements{Capabilities: o.capabilities, Labels: map[string]string{}}
		for _, kv := range o.labels {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, usageError("--require-label: want key=value, got %q", kv)
			}
			req.Requires.Labels[k] = v
		}
	}
	return req, nil
}

// readWorkflow reads and validates a workflow file, so mistakes are caught
// before anything is sent.
func (a *app) readWorkflow(path string) (*casarev1.Workflow, error) {
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
	wf, err := workflow.Parse(data)
	if err != nil {
		return nil, usageError("%s: %v", path, err)
	}
	if err := workflow.Validate(wf, builtin.Steps); err != nil {
		return nil, usageError("%s: %v", path, err)
	}
	return wf, nil
}

// parseInputs turns k=v pairs into the inputs struct: a value that parses
// as JSON is taken as JSON (numbers, booleans, objects), else as a string.
func parseInputs(pairs []string) (*structpb.Struct, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	fields := map[string]any{}
	for _, kv := range pairs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError("--input: want key=value, got %q", kv)
		}
		var parsed any
		if err := json.Unmarshal([]byte(v), &parsed); err == nil {
			fields[k] = parsed
		} else {
			fields[k] = v
		}
	}
	s, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, usageError("--input: %v", err)
	}
	return s, nil
}

func (a *app) printJob(job *casarev1.Job) error {
	return a.print(job, func(w io.Writer) {
		fmt.Fprintln(w, "ID\tWORKFLOW\tSTATUS\tPRIORITY\tATTEMPT")
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d/%d\n", job.GetId(), dash(job.GetWorkflowName()), jobStatus(job.GetStatus()),
			priority(job.GetPriority()), job.GetAttempt(), job.GetMaxAttempts())
	})
}

func finished(s casarev1.JobStatus) bool {
	return s == casarev1.JobStatus_JOB_STATUS_SUCCEEDED || s == casarev1.JobStatus_JOB_STATUS_FAILED ||
		s == casarev1.JobStatus_JOB_STATUS_CANCELLED
}

// waitForJob follows the job until it ends, telling each status change on
// stderr, and prints the final job on stdout. The exit code says how it
// ended.
func (a *app) waitForJob(ctx context.Context, job *casarev1.Job, timeout time.Duration) error {
	// The wait limit is the client's own: as a deadline on the call it
	// would travel to the server, which would end the stream a moment
	// early with an error of its own.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var expired atomic.Bool
	if timeout > 0 {
		timer := time.AfterFunc(timeout, func() { expired.Store(true); cancel() })
		defer timer.Stop()
	}
	conn, err := a.connect()
	if err != nil {
		return err
	}
	fmt.Fprintf(a.env.Stderr, "job %s %s\n", job.GetId(), jobStatus(job.GetStatus()))
	last := job.GetStatus()
	gaveUp := func() error {
		return &exitError{code: ExitError, err: fmt.Errorf("gave up waiting after %s: job %s is still %s", timeout, job.GetId(), jobStatus(job.GetStatus()))}
	}
	// The server pushes each change; nothing polls.
	stream, err := conn.jobs.WatchJobs(ctx, &casarev1.WatchJobsRequest{JobIds: []string{job.GetId()}})
	if err != nil {
		if expired.Load() {
			return gaveUp()
		}
		return a.apiError(err)
	}
	defer stream.Close()
	for !finished(job.GetStatus()) {
		msg, err := stream.Receive()
		if err != nil && expired.Load() {
			return gaveUp()
		}
		if err != nil {
			return a.apiError(err)
		}
		for _, j := range msg.GetJobs() {
			if j.GetId() != job.GetId() {
				continue
			}
			job = j
			if job.GetStatus() != last {
				fmt.Fprintf(a.env.Stderr, "job %s %s\n", job.GetId(), jobStatus(job.GetStatus()))
				last = job.GetStatus()
			}
		}
	}
	if err := a.printJob(job); err != nil {
		return err
	}
	if job.GetStatus() != casarev1.JobStatus_JOB_STATUS_SUCCEEDED {
		return &exitError{code: ExitFailed, err: fmt.Errorf("job %s %s: %s", job.GetId(), jobStatus(job.GetStatus()), job.GetStatusMessage())}
	}
	return nil
}

func (a *app) jobsGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a job and its event timeline",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.jobs.GetJob(cmd.Context(), &casarev1.GetJobRequest{Id: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				j := res.GetJob()
				fmt.Fprintf(w, "ID:\t%s\n", j.GetId())
				fmt.Fprintf(w, "Workflow:\t%s", dash(j.GetWorkflowName()))
				if j.GetWorkflowVersion() > 0 {
					fmt.Fprintf(w, " (version %d)", j.GetWorkflowVersion())
				}
				fmt.Fprintln(w)
				fmt.Fprintf(w, "Status:\t%s\n", jobStatus(j.GetStatus()))
				fmt.Fprintf(w, "Message:\t%s\n", dash(j.GetStatusMessage()))
				fmt.Fprintf(w, "Priority:\t%s\n", priority(j.GetPriority()))
				fmt.Fprintf(w, "Attempt:\t%d of %d\n", j.GetAttempt(), j.GetMaxAttempts())
				fmt.Fprintf(w, "Robot:\t%s\n", dash(j.GetRobotId()))
				fmt.Fprintf(w, "Created:\t%s by %s\n", formatTime(j.GetCreatedAt()), dash(j.GetCreatedBy()))
				fmt.Fprintf(w, "Started:\t%s\n", formatTime(j.GetStartedAt()))
				fmt.Fprintf(w, "Finished:\t%s\n", formatTime(j.GetFinishedAt()))
				fmt.Fprintln(w)
				fmt.Fprintln(w, "TIME\tFROM\tTO\tATTEMPT\tROBOT\tACTOR\tREASON")
				for _, e := range res.GetEvents() {
					from := "-"
					if e.GetFromStatus() != casarev1.JobStatus_JOB_STATUS_UNSPECIFIED {
						from = jobStatus(e.GetFromStatus())
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", formatTime(e.GetTime()), from, jobStatus(e.GetToStatus()),
						e.GetAttempt(), dash(e.GetRobotId()), dash(e.GetActor()), dash(e.GetReason()))
				}
			})
		},
	}
}

func (a *app) jobsListCommand() *cobra.Command {
	var statuses []string
	var workflowName, robot, pageToken string
	var limit int32
	var all bool
	cmd := &cobra.Command{
		Use:   "list [--status pending,failed] [--workflow W] [--robot R]",
		Short: "List jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &casarev1.ListJobsRequest{PageSize: limit, PageToken: pageToken, WorkflowName: workflowName, RobotId: robot}
			for _, s := range statuses {
				v, ok := casarev1.JobStatus_value["JOB_STATUS_"+strings.ToUpper(s)]
				if !ok || v == 0 {
					return usageError("--status: unknown status %q (pending, assigned, running, succeeded, failed, cancelled)", s)
				}
				req.Statuses = append(req.Statuses, casarev1.JobStatus(v))
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListJobsResponse{}
			for {
				res, err := conn.jobs.ListJobs(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Jobs = append(out.Jobs, res.GetJobs()...)
				out.NextPageToken = res.GetNextPageToken()
				if !all || out.NextPageToken == "" {
					break
				}
				req.PageToken = out.NextPageToken
			}
			now := time.Now()
			err = a.print(out, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tWORKFLOW\tSTATUS\tPRIORITY\tATTEMPT\tROBOT\tAGE")
				for _, j := range out.GetJobs() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", j.GetId(), dash(j.GetWorkflowName()), jobStatus(j.GetStatus()),
						priority(j.GetPriority()), j.GetAttempt(), j.GetMaxAttempts(), dash(j.GetRobotId()), age(j.GetCreatedAt(), now))
				}
			})
			if out.NextPageToken != "" && a.outputFlag == "table" {
				fmt.Fprintf(a.env.Stderr, "more jobs: casarectl jobs list --page-token %s (or --all)\n", out.NextPageToken)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&statuses, "status", nil, "only jobs in these statuses (comma separated)")
	f.StringVar(&workflowName, "workflow", "", "only jobs of this workflow")
	f.StringVar(&robot, "robot", "", "only jobs of this robot")
	f.Int32Var(&limit, "limit", 50, "jobs per page (at most 1000)")
	f.BoolVar(&all, "all", false, "fetch every page")
	f.StringVar(&pageToken, "page-token", "", "continue from an earlier listing")
	return cmd
}

func (a *app) jobsCancelCommand() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel ID [--reason TEXT]",
		Short: "Cancel a job that has not finished",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.jobs.CancelJob(cmd.Context(), &casarev1.CancelJobRequest{Id: args[0], Reason: reason})
			if err != nil {
				return a.apiError(err)
			}
			return a.printJob(res.GetJob())
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the job's events")
	return cmd
}
