package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// webhooksCommand manages outbound event subscriptions: the control plane
// posts the events each asks for to its URL, signed with its secret.
func (a *app) webhooksCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "webhooks", Aliases: []string{"webhook"}, Short: "Manage event webhook subscriptions"}

	var url, workflow string
	var events []string
	create := &cobra.Command{
		Use:   "create NAME --url URL --events job.succeeded,job.failed [--workflow NAME]",
		Short: "Subscribe a URL to events; the signing secret is shown only once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.CreateSubscription(cmd.Context(), &casarev1.CreateSubscriptionRequest{Subscription: &casarev1.Subscription{
				Name: args[0], Url: url, EventTypes: events, WorkflowName: workflow,
			}})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintln(w, res.GetSecret())
				fmt.Fprintf(a.env.Stderr, "subscription %q created; store the secret now, it is not shown again\n", res.GetSubscription().GetName())
			})
		},
	}
	create.Flags().StringVar(&url, "url", "", "http or https URL the events are posted to (required)")
	create.Flags().StringSliceVar(&events, "events", nil, "event types: job.succeeded, job.failed, job.cancelled, job.waiting, robot.offline, schedule.missed, subscription.disabled (required)")
	create.Flags().StringVar(&workflow, "workflow", "", "only job events of jobs of this workflow")
	_ = create.MarkFlagRequired("url")
	_ = create.MarkFlagRequired("events")

	update := &cobra.Command{
		Use:   "update NAME [--url URL] [--events T,…] [--workflow NAME]",
		Short: "Change a subscription's URL, events or workflow filter; the secret stays",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			got, err := conn.webhooks.GetSubscription(cmd.Context(), &casarev1.GetSubscriptionRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			sub := got.GetSubscription()
			flags := cmd.Flags()
			if flags.Changed("url") {
				sub.Url = url
			}
			if flags.Changed("events") {
				sub.EventTypes = events
			}
			if flags.Changed("workflow") {
				sub.WorkflowName = workflow
			}
			res, err := conn.webhooks.UpdateSubscription(cmd.Context(), &casarev1.UpdateSubscriptionRequest{Subscription: &casarev1.Subscription{
				Name: sub.GetName(), Url: sub.GetUrl(), EventTypes: sub.GetEventTypes(), WorkflowName: sub.GetWorkflowName(),
			}})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetSubscription(), func(w io.Writer) { subscriptionTable(w, res.GetSubscription()) })
		},
	}
	update.Flags().StringVar(&url, "url", "", "http or https URL the events are posted to")
	update.Flags().StringSliceVar(&events, "events", nil, "event types, replacing those it had")
	update.Flags().StringVar(&workflow, "workflow", "", "only job events of jobs of this workflow; empty for all")

	list := &cobra.Command{
		Use:   "list",
		Short: "List event subscriptions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListSubscriptionsResponse{}
			req := &casarev1.ListSubscriptionsRequest{PageSize: 1000}
			for {
				res, err := conn.webhooks.ListSubscriptions(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Subscriptions = append(out.Subscriptions, res.GetSubscriptions()...)
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			return a.print(out, func(w io.Writer) { subscriptionTable(w, out.GetSubscriptions()...) })
		},
	}

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show an event subscription (never its secret)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.GetSubscription(cmd.Context(), &casarev1.GetSubscriptionRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			sub := res.GetSubscription()
			return a.print(sub, func(w io.Writer) {
				subscriptionTable(w, sub)
				if sub.GetDisabledReason() != "" {
					fmt.Fprintf(w, "\nDisabled:\t%s\n", sub.GetDisabledReason())
				}
			})
		},
	}

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an event subscription and its deliveries",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.DeleteSubscription(cmd.Context(), &casarev1.DeleteSubscriptionRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetSubscription(), func(w io.Writer) {
				fmt.Fprintf(w, "subscription %s deleted\n", res.GetSubscription().GetName())
			})
		},
	}

	setEnabled := func(use, short string, enabled bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				conn, err := a.connect()
				if err != nil {
					return err
				}
				res, err := conn.webhooks.SetSubscriptionEnabled(cmd.Context(), &casarev1.SetSubscriptionEnabledRequest{Name: args[0], Enabled: enabled})
				if err != nil {
					return a.apiError(err)
				}
				return a.print(res.GetSubscription(), func(w io.Writer) {
					fmt.Fprintf(w, "subscription %s %sd\n", res.GetSubscription().GetName(), use)
				})
			},
		}
	}

	test := &cobra.Command{
		Use:   "test NAME",
		Short: "Send a subscription a ping event",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.TestSubscription(cmd.Context(), &casarev1.TestSubscriptionRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "ping %s queued; see casarectl webhooks deliveries %s\n", res.GetEventId(), args[0])
			})
		},
	}

	var limit int32
	deliveries := &cobra.Command{
		Use:   "deliveries NAME [--limit N]",
		Short: "Show the tries of deliveries to a subscription, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > 1000 {
				return usageError("--limit: 1 to 1000, got %d", limit)
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.ListDeliveries(cmd.Context(), &casarev1.ListDeliveriesRequest{Name: args[0], PageSize: limit})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintln(w, "TIME\tEVENT\tTYPE\tOUTCOME\tSTATUS\tLATENCY\tERROR")
				for _, at := range res.GetAttempts() {
					status := "-"
					if at.GetStatusCode() != 0 {
						status = fmt.Sprint(at.GetStatusCode())
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%dms\t%s\n", formatTime(at.GetTime()), at.GetEventId(), at.GetEventType(),
						at.GetOutcome(), status, at.GetLatencyMs(), dash(at.GetError()))
				}
			})
		},
	}
	deliveries.Flags().Int32Var(&limit, "limit", 50, "how many tries to show")

	var to string
	redeliver := &cobra.Command{
		Use:   "redeliver EVENT_ID [--to NAME]",
		Short: "Send an event again, to every subscription that had it or to one",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.webhooks.RedeliverEvent(cmd.Context(), &casarev1.RedeliverEventRequest{EventId: args[0], Name: to})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "event %s queued again for %d subscription(s)\n", args[0], res.GetDeliveries())
			})
		},
	}
	redeliver.Flags().StringVar(&to, "to", "", "only to this subscription")

	cmd.AddCommand(create, update, list, get, del, setEnabled("enable", "Enable a subscription again; what waited is sent", true),
		setEnabled("disable", "Stop sending to a subscription; events keep waiting for it", false), test, deliveries, redeliver)
	return cmd
}

func subscriptionTable(w io.Writer, subs ...*casarev1.Subscription) {
	fmt.Fprintln(w, "NAME\tURL\tEVENTS\tWORKFLOW\tENABLED\tFAILURES\tCREATED")
	for _, s := range subs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%d\t%s\n", s.GetName(), s.GetUrl(), strings.Join(s.GetEventTypes(), ","), dash(s.GetWorkflowName()),
			s.GetEnabled(), s.GetConsecutiveFailures(), formatTime(s.GetCreatedAt()))
	}
}
