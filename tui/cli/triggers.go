package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func triggerAuth(a casarev1.TriggerAuth) string {
	if a == casarev1.TriggerAuth_TRIGGER_AUTH_BEARER {
		return "bearer"
	}
	return "standard-webhooks"
}

// parseRate reads a rate like 10/s, 600/m or 3600/h (a bare number is per
// second) as requests a second.
func parseRate(s string) (float64, error) {
	num, unit, _ := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a positive number of requests like 10/s, 600/m or 3600/h, got %q", s)
	}
	switch unit {
	case "", "s":
		return n, nil
	case "m":
		return n / 60, nil
	case "h":
		return n / 3600, nil
	}
	return 0, fmt.Errorf("want a rate per s, m or h like 10/s, got %q", s)
}

func formatRate(perSecond float64) string {
	if perSecond == 0 {
		return "default"
	}
	return strconv.FormatFloat(perSecond, 'g', 4, 64) + "/s"
}

// triggerFlags are the flags that say what a trigger starts and how, for
// create and update.
type triggerFlags struct {
	workflow, auth, rate, priority string
	version, burst, maxAttempts    int32
	inputs                         []string
}

func (f *triggerFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.workflow, "workflow", "", "stored workflow the trigger starts")
	fs.Int32Var(&f.version, "version", 0, "workflow version to run (default: the latest at each request)")
	fs.StringArrayVar(&f.inputs, "input", nil, "input as name=CEL expression over body, headers and query (repeatable)")
	fs.StringVar(&f.rate, "rate", "", "requests accepted per replica, like 10/s, 600/m or 3600/h (default: the server's)")
	fs.Int32Var(&f.burst, "burst", 0, "requests accepted at once above the rate (default: the rate per second, rounded up)")
	fs.StringVar(&f.priority, "priority", "", "priority of the jobs: low, normal, high or critical")
	fs.Int32Var(&f.maxAttempts, "max-attempts", 0, "attempts per job (default: the server's)")
}

// apply sets on t what the flags given say.
func (f *triggerFlags) apply(cmd *cobra.Command, t *casarev1.Trigger) error {
	changed := cmd.Flags().Changed
	if changed("workflow") {
		t.WorkflowName = f.workflow
	}
	if changed("version") {
		t.WorkflowVersion = f.version
	}
	if changed("burst") {
		t.Burst = f.burst
	}
	if changed("max-attempts") {
		t.MaxAttempts = f.maxAttempts
	}
	for _, kv := range f.inputs {
		name, src, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return usageError("--input: want name=CEL, got %q", kv)
		}
		if t.Inputs == nil {
			t.Inputs = map[string]string{}
		}
		t.Inputs[name] = src
	}
	if changed("rate") {
		r, err := parseRate(f.rate)
		if err != nil {
			return usageError("--rate: %v", err)
		}
		t.RatePerSecond = r
	}
	if changed("priority") {
		p, ok := casarev1.JobPriority_value["JOB_PRIORITY_"+strings.ToUpper(f.priority)]
		if !ok || p == 0 {
			return usageError("--priority: want low, normal, high or critical, got %q", f.priority)
		}
		t.Priority = casarev1.JobPriority(p)
	}
	return nil
}

func (a *app) triggersCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "triggers", Aliases: []string{"trigger"}, Short: "Manage inbound webhook triggers that start workflows"}

	var cf triggerFlags
	create := &cobra.Command{
		Use:   "create NAME --workflow W [--input name='CEL']... [--auth standard-webhooks|bearer] [--rate 10/s]",
		Short: "Create a trigger; its URL and secret are printed, the secret only this once",
		Long: "Create a webhook trigger: a POST to its URL starts the stored workflow. Each --input maps a\n" +
			"workflow input to a CEL expression over the request: body (the JSON value, or the text),\n" +
			"headers (lower-case names) and query.",
		Example: "  casarectl triggers create shop-orders --workflow invoice-sync --input url='body.invoice.url' --rate 5/s",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t := &casarev1.Trigger{Name: args[0]}
			if err := cf.apply(cmd, t); err != nil {
				return err
			}
			switch cf.auth {
			case "standard-webhooks":
				t.Auth = casarev1.TriggerAuth_TRIGGER_AUTH_STANDARD_WEBHOOKS
			case "bearer":
				t.Auth = casarev1.TriggerAuth_TRIGGER_AUTH_BEARER
			default:
				return usageError("--auth: want standard-webhooks or bearer, got %q", cf.auth)
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.CreateTrigger(cmd.Context(), &casarev1.CreateTriggerRequest{Trigger: t})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "URL:\t%s%s\n", conn.server, res.GetTrigger().GetUrlPath())
				fmt.Fprintf(w, "Auth:\t%s\n", triggerAuth(res.GetTrigger().GetAuth()))
				fmt.Fprintf(w, "Secret:\t%s\n", res.GetSecret())
				fmt.Fprintf(a.env.Stderr, "trigger %q created; store the secret now, it is not shown again\n", res.GetTrigger().GetName())
			})
		},
	}
	cf.register(create)
	create.Flags().StringVar(&cf.auth, "auth", "standard-webhooks", "how senders prove themselves: standard-webhooks (HMAC signatures) or bearer")
	_ = create.MarkFlagRequired("workflow")

	var uf triggerFlags
	update := &cobra.Command{
		Use:   "update NAME [--workflow W] [--input name='CEL']... [--rate 10/s] ...",
		Short: "Change what a trigger starts and how; its URL and secret stay",
		Long:  "Change a trigger: the flags given replace what it has (--input, given at all, replaces every input).",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			got, err := conn.webhooks.GetTrigger(cmd.Context(), &casarev1.GetTriggerRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			t := got.GetTrigger()
			if cmd.Flags().Changed("input") {
				t.Inputs = nil
			}
			if err := uf.apply(cmd, t); err != nil {
				return err
			}
			// Fields the server sets are not the request's to say.
			t.Id, t.UrlPath, t.CreatedAt, t.CreatedBy, t.UpdatedAt, t.PreviousSecretExpiresAt = "", "", nil, "", nil, nil
			res, err := conn.webhooks.UpdateTrigger(cmd.Context(), &casarev1.UpdateTriggerRequest{Trigger: t})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetTrigger(), func(w io.Writer) {
				fmt.Fprintf(w, "trigger %s updated\n", res.GetTrigger().GetName())
			})
		},
	}
	uf.register(update)

	var listWorkflow string
	list := &cobra.Command{
		Use:   "list [--workflow W]",
		Short: "List triggers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListTriggersResponse{}
			req := &casarev1.ListTriggersRequest{PageSize: 1000, WorkflowName: listWorkflow}
			for {
				res, err := conn.webhooks.ListTriggers(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Triggers = append(out.Triggers, res.GetTriggers()...)
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			now := time.Now()
			return a.print(out, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tWORKFLOW\tAUTH\tRATE\tURL\tAGE")
				for _, t := range out.GetTriggers() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s%s\t%s\n", t.GetName(), t.GetWorkflowName(), triggerAuth(t.GetAuth()),
						formatRate(t.GetRatePerSecond()), conn.server, t.GetUrlPath(), age(t.GetCreatedAt(), now))
				}
			})
		},
	}
	list.Flags().StringVar(&listWorkflow, "workflow", "", "only the triggers of this workflow")

	get := &cobra.Command{
		Use:   "get NAME_OR_ID",
		Short: "Show a trigger (never its secret)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.GetTrigger(cmd.Context(), &casarev1.GetTriggerRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			t := res.GetTrigger()
			return a.print(t, func(w io.Writer) {
				version := "latest"
				if t.GetWorkflowVersion() != 0 {
					version = strconv.Itoa(int(t.GetWorkflowVersion()))
				}
				fmt.Fprintf(w, "Name:\t%s\nID:\t%s\nURL:\t%s%s\nWorkflow:\t%s (%s)\nAuth:\t%s\nRate:\t%s\n",
					t.GetName(), t.GetId(), conn.server, t.GetUrlPath(), t.GetWorkflowName(), version,
					triggerAuth(t.GetAuth()), formatRate(t.GetRatePerSecond()))
				if t.GetPreviousSecretExpiresAt() != nil {
					fmt.Fprintf(w, "Previous secret valid until:\t%s\n", formatTime(t.GetPreviousSecretExpiresAt()))
				}
				fmt.Fprintf(w, "Created:\t%s by %s\n", formatTime(t.GetCreatedAt()), t.GetCreatedBy())
				fmt.Fprintln(w, "Inputs:")
				for _, name := range slices.Sorted(maps.Keys(t.GetInputs())) {
					fmt.Fprintf(w, "  %s\t%s\n", name, t.GetInputs()[name])
				}
			})
		},
	}

	del := &cobra.Command{
		Use:   "delete NAME_OR_ID",
		Short: "Delete a trigger; its URL answers 404 from then on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.DeleteTrigger(cmd.Context(), &casarev1.DeleteTriggerRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetTrigger(), func(w io.Writer) {
				fmt.Fprintf(w, "trigger %s (%s) deleted\n", res.GetTrigger().GetName(), res.GetTrigger().GetId())
			})
		},
	}

	var grace time.Duration
	rotate := &cobra.Command{
		Use:   "rotate-secret NAME_OR_ID [--grace D]",
		Short: "Give a trigger a new secret; the old one stays valid for the grace period",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if grace < 0 {
				return usageError("--grace: want 0 or more, got %s", grace)
			}
			req := &casarev1.RotateTriggerSecretRequest{Name: args[0]}
			if cmd.Flags().Changed("grace") {
				req.Grace = durationpb.New(grace)
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.RotateTriggerSecret(cmd.Context(), req)
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintln(w, res.GetSecret())
				until := "no longer valid"
				if ts := res.GetTrigger().GetPreviousSecretExpiresAt(); ts != nil {
					until = "valid until " + formatTime(ts)
				}
				fmt.Fprintf(a.env.Stderr, "trigger %q has a new secret; store it now, it is not shown again (the old one is %s)\n",
					res.GetTrigger().GetName(), until)
			})
		},
	}
	rotate.Flags().DurationVar(&grace, "grace", 24*time.Hour, "how long the old secret stays valid")

	cmd.AddCommand(create, update, list, get, del, rotate)
	return cmd
}
