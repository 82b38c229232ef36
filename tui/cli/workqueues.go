package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	dashboard "github.com/casarerpa/casare/tui/dash"
)

func itemStatus(s casarev1.WorkItemStatus) string {
	if s == casarev1.WorkItemStatus_WORK_ITEM_STATUS_UNSPECIFIED {
		return "-"
	}
	return shortEnum(s.String(), "WORK_ITEM_STATUS_")
}

func itemPriority(p casarev1.WorkItemPriority) string {
	if p == casarev1.WorkItemPriority_WORK_ITEM_PRIORITY_UNSPECIFIED {
		return "normal"
	}
	return strings.ToLower(shortEnum(p.String(), "WORK_ITEM_PRIORITY_"))
}

func itemException(e casarev1.WorkItemException) string {
	if e == casarev1.WorkItemException_WORK_ITEM_EXCEPTION_UNSPECIFIED {
		return "-"
	}
	return strings.ToLower(shortEnum(e.String(), "WORK_ITEM_EXCEPTION_"))
}

// queueFlags are the flags that describe a queue. Update reads the queue,
// changes what the flags given name and writes it back.
type queueFlags struct {
	description, sla, triggerWorkflow, triggerPriority string
	maxRetries, triggerVersion                         int32
	minItems, itemsPerJob, maxJobs                     int32
	uniqueReferences, triggerEnabled, noTrigger        bool
	capabilities, labels                               []string
}

func (o *queueFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.description, "description", "", "what the queue holds")
	f.Int32Var(&o.maxRetries, "max-retries", 0, "retries of an item failing with an application exception or abandoned (0-100)")
	f.BoolVar(&o.uniqueReferences, "unique-references", false, "refuse an item whose reference another item of the queue has")
	f.StringVar(&o.sla, "sla", "", "items should end within this long of being added, e.g. 4h or 2d (0 for none)")
	f.StringVar(&o.triggerWorkflow, "trigger-workflow", "", "start jobs of this stored workflow while the queue has NEW items")
	f.Int32Var(&o.triggerVersion, "trigger-workflow-version", 0, "stored version the trigger's jobs run (default: the latest)")
	f.Int32Var(&o.minItems, "min-items", 0, "the trigger starts no job until this many items are NEW (default 1)")
	f.Int32Var(&o.itemsPerJob, "items-per-job", 0, "the trigger starts one job per this many NEW items (default 1)")
	f.Int32Var(&o.maxJobs, "max-jobs", 0, "at most this many of the trigger's jobs pending or running at once (default 1)")
	f.StringVar(&o.triggerPriority, "trigger-priority", "", "priority of the trigger's jobs: low, normal, high or critical")
	f.StringArrayVar(&o.capabilities, "trigger-require-capability", nil, "capability the trigger's jobs need (repeatable)")
	f.StringArrayVar(&o.labels, "trigger-require-label", nil, "label k=v the trigger's jobs need (repeatable)")
	f.BoolVar(&o.triggerEnabled, "trigger-enabled", true, "whether the trigger starts jobs (--trigger-enabled=false keeps it but stops it)")
	f.BoolVar(&o.noTrigger, "no-trigger", false, "remove the queue's trigger")
}

// queueTriggerFlags are the flags that change a trigger other than its
// workflow: they need one, given or already there.
var queueTriggerFlags = []string{"trigger-workflow-version", "min-items", "items-per-job", "max-jobs", "trigger-priority",
	"trigger-require-capability", "trigger-require-label", "trigger-enabled"}

// queueFlagNames are every flag of queueFlags: update needs one of them.
var queueFlagNames = append([]string{"description", "max-retries", "unique-references", "sla", "trigger-workflow", "no-trigger"},
	queueTriggerFlags...)

// apply sets on q what the flags given say.
func (o *queueFlags) apply(cmd *cobra.Command, q *casarev1.WorkQueue) error {
	changed := cmd.Flags().Changed
	if changed("description") {
		q.Description = o.description
	}
	if changed("max-retries") {
		if o.maxRetries < 0 || o.maxRetries > 100 {
			return usageError("--max-retries: want 0 to 100, got %d", o.maxRetries)
		}
		q.MaxRetries = o.maxRetries
	}
	if changed("unique-references") {
		q.UniqueReferences = o.uniqueReferences
	}
	if changed("sla") {
		q.Sla = nil
		if o.sla != "" && o.sla != "0" {
			d, err := parseDuration(o.sla)
			if err != nil || d <= 0 {
				return usageError("--sla: want a duration such as 30m, 4h or 2d, got %q", o.sla)
			}
			if d > 365*24*time.Hour {
				return usageError("--sla: %s is over the limit of 365d", o.sla)
			}
			q.Sla = durationpb.New(d)
		}
	}
	if o.noTrigger {
		if changed("trigger-workflow") || anyChanged(cmd, queueTriggerFlags) {
			return usageError("--no-trigger: give no other trigger flag with it")
		}
		q.Trigger = nil
		return nil
	}
	if changed("trigger-workflow") {
		if o.triggerWorkflow == "" {
			return usageError("--trigger-workflow: empty: name a stored workflow, or give --no-trigger to remove the trigger")
		}
		if q.Trigger == nil {
			q.Trigger = &casarev1.QueueTrigger{Enabled: true}
		}
		q.Trigger.WorkflowName = o.triggerWorkflow
	}
	if q.Trigger == nil {
		for _, name := range queueTriggerFlags {
			if changed(name) {
				return usageError("--%s: the queue has no trigger: give --trigger-workflow W too", name)
			}
		}
		return nil
	}
	t := q.Trigger
	for _, n := range []struct {
		flag  string
		value int32
		into  *int32
		limit int32
	}{
		{"trigger-workflow-version", o.triggerVersion, &t.WorkflowVersion, 1 << 30},
		{"min-items", o.minItems, &t.MinItems, 1000000},
		{"items-per-job", o.itemsPerJob, &t.ItemsPerJob, 1000000},
		{"max-jobs", o.maxJobs, &t.MaxJobs, 10000},
	} {
		if !changed(n.flag) {
			continue
		}
		if n.value < 0 || n.value > n.limit {
			return usageError("--%s: want 0 to %d, got %d", n.flag, n.limit, n.value)
		}
		*n.into = n.value
	}
	if changed("trigger-priority") {
		v, err := enumFlag("--trigger-priority", o.triggerPriority, "JOB_PRIORITY_", casarev1.JobPriority_value)
		if err != nil {
			return err
		}
		t.Priority = casarev1.JobPriority(v)
	}
	if changed("trigger-require-capability") || changed("trigger-require-label") {
		if t.Requires == nil {
			t.Requires = &casarev1.Requirements{}
		}
		if changed("trigger-require-capability") {
			t.Requires.Capabilities = o.capabilities
		}
		if changed("trigger-require-label") {
			t.Requires.Labels = map[string]string{}
			for _, kv := range o.labels {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError("--trigger-require-label: want key=value, got %q", kv)
				}
				t.Requires.Labels[k] = v
			}
		}
	}
	if changed("trigger-enabled") {
		t.Enabled = o.triggerEnabled
	}
	return nil
}

func anyChanged(cmd *cobra.Command, names []string) bool {
	for _, n := range names {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// triggerText says what a queue's trigger does, in a few words.
func triggerText(t *casarev1.QueueTrigger) string {
	if t == nil || t.GetWorkflowName() == "" {
		return "-"
	}
	s := fmt.Sprintf("%s (min %d, %d per job, max %d jobs)", t.GetWorkflowName(),
		max(1, t.GetMinItems()), max(1, t.GetItemsPerJob()), max(1, t.GetMaxJobs()))
	if !t.GetEnabled() {
		s += " disabled"
	}
	return s
}

func slaText(q *casarev1.WorkQueue) string {
	if q.GetSla() == nil {
		return "-"
	}
	return dashboard.ShortDuration(q.GetSla().AsDuration())
}

func count(st *casarev1.WorkQueueStats, status string) int64 { return st.GetCounts()[status] }

func oldestNew(st *casarev1.WorkQueueStats, now time.Time) string {
	if st.GetOldestNew() == nil {
		return "-"
	}
	return age(st.GetOldestNew(), now)
}

func queueTable(w io.Writer, queues []*casarev1.WorkQueue, stats []*casarev1.WorkQueueStats, now time.Time) {
	fmt.Fprintln(w, "NAME\tNEW\tIN PROGRESS\tSUCCESSFUL\tFAILED\tPER MIN\tSLA\tSLA BREACHES\tOLDEST NEW\tTRIGGER")
	for i, q := range queues {
		var st *casarev1.WorkQueueStats
		if i < len(stats) {
			st = stats[i]
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%.1f\t%s\t%d\t%s\t%s\n", q.GetName(), count(st, "NEW"), count(st, "IN_PROGRESS"),
			count(st, "SUCCESSFUL"), count(st, "FAILED"), st.GetItemsPerMinute(), slaText(q), st.GetSlaBreaches(),
			oldestNew(st, now), triggerText(q.GetTrigger()))
	}
}

// statsLines prints a queue's figures, one per line, every status.
func statsLines(w io.Writer, st *casarev1.WorkQueueStats, now time.Time) {
	for _, s := range []casarev1.WorkItemStatus{
		casarev1.WorkItemStatus_WORK_ITEM_STATUS_NEW, casarev1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS,
		casarev1.WorkItemStatus_WORK_ITEM_STATUS_SUCCESSFUL, casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED,
		casarev1.WorkItemStatus_WORK_ITEM_STATUS_ABANDONED, casarev1.WorkItemStatus_WORK_ITEM_STATUS_RETRIED,
		casarev1.WorkItemStatus_WORK_ITEM_STATUS_DELETED,
	} {
		name := itemStatus(s)
		fmt.Fprintf(w, "%s:\t%d\n", name, count(st, name))
	}
	avg := "-"
	if d := st.GetAverageProcessing(); d != nil {
		avg = d.AsDuration().Round(time.Millisecond).String()
	}
	fmt.Fprintf(w, "Items per minute:\t%.1f\nAverage processing:\t%s\nSLA breaches:\t%d\nOldest new item:\t%s\n",
		st.GetItemsPerMinute(), avg, st.GetSlaBreaches(), oldestNew(st, now))
}

func (a *app) workqueuesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "workqueues",
		Aliases: []string{"workqueue", "wq"},
		Short:   "Manage work queues: items that robots take one at a time, with retries, SLAs and triggers",
		Long: "A work queue holds items (an invoice, a customer record) that jobs take one at a\n" +
			"time with the queue.* workflow steps. Viewers read; operators create and change\n" +
			"queues, add, retry, defer and delete items; admins delete queues.",
	}
	cmd.AddCommand(
		a.workqueuesListCommand(), a.workqueuesGetCommand(), a.workqueuesStatsCommand(),
		a.workqueuesCreateCommand(), a.workqueuesUpdateCommand(), a.workqueuesDeleteCommand(),
		a.workqueuesAddCommand(), a.workqueuesItemsCommand(), a.workqueuesItemCommand(),
		a.workqueuesRetryCommand(), a.workqueuesDeferCommand(), a.workqueuesDeleteItemsCommand(),
	)
	return cmd
}

func (a *app) workqueuesListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List work queues with their figures",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListWorkQueuesResponse{}
			req := &casarev1.ListWorkQueuesRequest{PageSize: 1000}
			for {
				res, err := conn.workqueues.ListWorkQueues(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Queues = append(out.Queues, res.GetQueues()...)
				out.Stats = append(out.Stats, res.GetStats()...)
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			now := time.Now()
			return a.print(out, func(w io.Writer) { queueTable(w, out.GetQueues(), out.GetStats(), now) })
		},
	}
}

func (a *app) workqueuesGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show a work queue and its figures",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.workqueues.GetWorkQueue(cmd.Context(), &casarev1.GetWorkQueueRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			now := time.Now()
			return a.print(res, func(w io.Writer) {
				q := res.GetQueue()
				fmt.Fprintf(w, "Name:\t%s\nDescription:\t%s\nMax retries:\t%d\nUnique references:\t%t\nSLA:\t%s\nTrigger:\t%s\nUpdated:\t%s by %s\n",
					q.GetName(), dash(q.GetDescription()), q.GetMaxRetries(), q.GetUniqueReferences(), slaText(q),
					triggerText(q.GetTrigger()), formatTime(q.GetUpdatedAt()), dash(q.GetUpdatedBy()))
				fmt.Fprintln(w)
				statsLines(w, res.GetStats(), now)
			})
		},
	}
}

func (a *app) workqueuesStatsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stats NAME",
		Short: "Show a work queue's figures: items by status, items per minute, processing time, SLA breaches",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.workqueues.GetWorkQueueStats(cmd.Context(), &casarev1.GetWorkQueueStatsRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			now := time.Now()
			return a.print(res.GetStats(), func(w io.Writer) { statsLines(w, res.GetStats(), now) })
		},
	}
}

func (a *app) workqueuesCreateCommand() *cobra.Command {
	var flags queueFlags
	cmd := &cobra.Command{
		Use:   "create NAME [--description D] [--max-retries N] [--unique-references] [--sla 4h] [--trigger-workflow W --min-items N --items-per-job N --max-jobs N]",
		Short: "Create a work queue",
		Example: "  casarectl workqueues create invoices --max-retries 2 --unique-references --sla 4h \\\n" +
			"      --trigger-workflow invoice-process --items-per-job 50 --max-jobs 4",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := &casarev1.WorkQueue{Name: args[0]}
			if err := flags.apply(cmd, q); err != nil {
				return err
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.workqueues.CreateWorkQueue(cmd.Context(), &casarev1.CreateWorkQueueRequest{Queue: q})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetQueue(), func(w io.Writer) { fmt.Fprintf(w, "work queue %s created\n", res.GetQueue().GetName()) })
		},
	}
	flags.add(cmd)
	return cmd
}

func (a *app) workqueuesUpdateCommand() *cobra.Command {
	var flags queueFlags
	cmd := &cobra.Command{
		Use:   "update NAME [flags of create] [--no-trigger]",
		Short: "Change a work queue: the flags given replace what they name, the rest stays",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !anyChanged(cmd, queueFlagNames) {
				return usageError("update: nothing to change: give a flag such as --max-retries or --sla")
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			cur, err := conn.workqueues.GetWorkQueue(cmd.Context(), &casarev1.GetWorkQueueRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			q := cur.GetQueue()
			if err := flags.apply(cmd, q); err != nil {
				return err
			}
			q.Name = args[0]
			res, err := conn.workqueues.UpdateWorkQueue(cmd.Context(), &casarev1.UpdateWorkQueueRequest{Queue: q})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetQueue(), func(w io.Writer) { fmt.Fprintf(w, "work queue %s updated\n", res.GetQueue().GetName()) })
		},
	}
	flags.add(cmd)
	return cmd
}

func (a *app) workqueuesDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a work queue with all its items (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.workqueues.DeleteWorkQueue(cmd.Context(), &casarev1.DeleteWorkQueueRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) { fmt.Fprintf(w, "work queue %s deleted\n", args[0]) })
		},
	}
}

func (a *app) workqueuesAddCommand() *cobra.Command {
	var file, format, reference, data, prio, deferUntil, deadline string
	cmd := &cobra.Command{
		Use:   "add NAME (-f items.csv|items.json|- [--format csv|json] | --data JSON [--reference R] [--priority P])",
		Short: "Add items to a work queue from a CSV or JSON file, or one item inline",
		Long: "add adds items, in calls of at most 10,000. A CSV file has a header row: the\n" +
			"columns reference, priority (low, normal, high), defer_until and deadline set\n" +
			"those fields, every other column goes into the item's data as a string. A JSON\n" +
			"file is an array of items {\"reference\": …, \"priority\": …, \"defer_until\": …,\n" +
			"\"deadline\": …, \"data\": {…}}, or of data objects, whose keys reference, priority,\n" +
			"defer_until and deadline set those fields as the CSV columns do. Times are\n" +
			"RFC 3339, a date, or a duration from now (4h, 2d). The file is read whole before\n" +
			"anything is sent, so a bad row stores nothing; a call the server refuses stores\n" +
			"none of its items.",
		Example: "  casarectl workqueues add invoices -f invoices.csv\n" +
			"  jq '[.[] | {reference: (.number|tostring), data: .}]' export.json | casarectl workqueues add invoices -f -\n" +
			"  casarectl workqueues add invoices --reference INV-1 --priority high --data '{\"amount\": 120}'",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			inline := anyChanged(cmd, []string{"reference", "data", "priority", "defer-until", "deadline"})
			var items []*casarev1.WorkItemInput
			switch {
			case file != "" && inline:
				return usageError("add: use -f FILE or --data/--reference for one item, not both")
			case file != "":
				var err error
				if items, err = a.readItemsFile(file, format); err != nil {
					return err
				}
			case inline:
				item, err := inlineItem(reference, data, prio, deferUntil, deadline)
				if err != nil {
					return err
				}
				items = []*casarev1.WorkItemInput{item}
			default:
				return usageError("add: say what to add: -f FILE (CSV or JSON, - for stdin), or --data JSON for one item")
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.AddWorkItemsResponse{}
			for start := 0; start < len(items); start += maxItemsPerCall {
				end := min(start+maxItemsPerCall, len(items))
				res, err := conn.workqueues.AddWorkItems(cmd.Context(), &casarev1.AddWorkItemsRequest{Queue: args[0], Items: items[start:end]})
				if err != nil {
					if len(items) <= maxItemsPerCall {
						return a.apiError(err)
					}
					// Earlier calls were stored; say which, so the rest can be
					// sent again once the bad rows are fixed.
					return prefixError(a.apiError(err), fmt.Sprintf("items %d to %d refused, %d added before them (the rows below count within these items)",
						start+1, end, len(out.GetIds())))
				}
				out.Ids = append(out.Ids, res.GetIds()...)
			}
			return a.print(out, func(w io.Writer) { fmt.Fprintf(w, "%d item(s) added to %s\n", len(out.GetIds()), args[0]) })
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "CSV or JSON file of items, - for stdin")
	f.StringVar(&format, "format", "", "csv or json (default: by the file's extension, or its first character)")
	f.StringVar(&reference, "reference", "", "one item's reference")
	f.StringVar(&data, "data", "", "one item's data, a JSON object")
	f.StringVar(&prio, "priority", "", "one item's priority: low, normal or high")
	f.StringVar(&deferUntil, "defer-until", "", "one item is not taken before this time")
	f.StringVar(&deadline, "deadline", "", "one item must be finished by this time")
	return cmd
}

// inlineItem is the one item of add's --reference/--data flags.
func inlineItem(reference, data, prio, deferUntil, deadline string) (*casarev1.WorkItemInput, error) {
	fields := map[string]any{}
	if data != "" {
		if err := json.Unmarshal([]byte(data), &fields); err != nil || fields == nil {
			return nil, usageError("--data: want a JSON object such as '{\"amount\": 120}', got %s", abbreviate(data, 40))
		}
	}
	item, err := newItemInput(fields)
	if err != nil {
		return nil, usageError("--%v", err)
	}
	for _, f := range []struct{ flag, key, value string }{
		{"reference", "reference", reference}, {"priority", "priority", prio},
		{"defer-until", "defer_until", deferUntil}, {"deadline", "deadline", deadline},
	} {
		if err := setItemField(item, f.key, f.value); err != nil {
			return nil, usageError("--%s: %v", f.flag, strings.TrimPrefix(err.Error(), f.key+": "))
		}
	}
	return item, nil
}

// itemStatuses are the statuses as --status takes them.
const itemStatuses = "new, in_progress, successful, failed, abandoned, retried, deleted"

func (a *app) workqueuesItemsCommand() *cobra.Command {
	var statuses []string
	var reference, since, until, exception, pageToken string
	var limit int32
	var all bool
	cmd := &cobra.Command{
		Use:   "items NAME [--status new,failed] [--reference R] [--since T] [--until T] [--exception business|application]",
		Short: "List a work queue's items, newest first",
		Example: "  casarectl workqueues items invoices --status failed --exception application --since 24h\n" +
			"  casarectl workqueues items invoices --status failed -o json | jq -r '.items[].id' | casarectl workqueues retry -",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &casarev1.ListWorkItemsRequest{Queue: args[0], Reference: reference, PageSize: limit, PageToken: pageToken}
			for _, s := range statuses {
				v, ok := casarev1.WorkItemStatus_value["WORK_ITEM_STATUS_"+strings.ToUpper(strings.ReplaceAll(s, "-", "_"))]
				if !ok || v == 0 {
					return usageError("--status: unknown status %q (%s)", s, itemStatuses)
				}
				req.Statuses = append(req.Statuses, casarev1.WorkItemStatus(v))
			}
			now := time.Now()
			for _, t := range []struct {
				flag, value string
				into        **timestamppb.Timestamp
			}{{"since", since, &req.CreatedAfter}, {"until", until, &req.CreatedBefore}} {
				if t.value == "" {
					continue
				}
				at, err := parseTime(t.value, now)
				if err != nil {
					return usageError("--%s: %v", t.flag, err)
				}
				// A bare duration means that long ago: --since 24h.
				if d, err := parseDuration(t.value); err == nil && d > 0 {
					at = now.Add(-d)
				}
				*t.into = timestamppb.New(at)
			}
			if exception != "" {
				v, err := enumFlag("--exception", exception, "WORK_ITEM_EXCEPTION_", casarev1.WorkItemException_value)
				if err != nil {
					return err
				}
				req.Exception = casarev1.WorkItemException(v)
			}
			if limit < 0 || limit > 1000 {
				return usageError("--limit: want 1 to 1000 items per page, got %d", limit)
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListWorkItemsResponse{}
			for {
				res, err := conn.workqueues.ListWorkItems(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Items = append(out.Items, res.GetItems()...)
				out.NextPageToken = res.GetNextPageToken()
				if !all || out.NextPageToken == "" {
					break
				}
				req.PageToken = out.NextPageToken
			}
			err = a.print(out, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tREFERENCE\tSTATUS\tPRIORITY\tRETRY\tEXCEPTION\tREASON\tJOB\tAGE")
				for _, it := range out.GetItems() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", it.GetId(), dash(it.GetReference()), itemStatus(it.GetStatus()),
						itemPriority(it.GetPriority()), it.GetRetry(), itemException(it.GetException()),
						dash(abbreviate(firstLine(it.GetReason()), 40)), dash(it.GetJobId()), age(it.GetCreatedAt(), now))
				}
			})
			if out.NextPageToken != "" && a.outputFlag == "table" {
				fmt.Fprintf(a.env.Stderr, "more items: casarectl workqueues items %s --page-token %s (or --all)\n", args[0], out.NextPageToken)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&statuses, "status", nil, "only items in these statuses (comma separated: "+itemStatuses+")")
	f.StringVar(&reference, "reference", "", "only the items with this reference")
	f.StringVar(&since, "since", "", "only items added at or after this time (RFC 3339, a date, or a duration ago such as 24h)")
	f.StringVar(&until, "until", "", "only items added before this time (the same forms as --since)")
	f.StringVar(&exception, "exception", "", "only items that failed with a business or application exception")
	f.Int32Var(&limit, "limit", 50, "items per page (at most 1000)")
	f.BoolVar(&all, "all", false, "fetch every page")
	f.StringVar(&pageToken, "page-token", "", "continue from an earlier listing")
	return cmd
}

// prefixError puts where in a bulk command an error happened before what
// the error says.
func prefixError(err error, prefix string) error {
	var e *exitError
	if errors.As(err, &e) {
		return &exitError{code: e.code, err: fmt.Errorf("%s: %w", prefix, e.err)}
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func (a *app) workqueuesItemCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "item ID",
		Short: "Show a work item with its history",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.workqueues.GetWorkItem(cmd.Context(), &casarev1.GetWorkItemRequest{Id: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				it := res.GetItem()
				fmt.Fprintf(w, "ID:\t%s\nQueue:\t%s\nReference:\t%s\nStatus:\t%s\nPriority:\t%s\n", it.GetId(), it.GetQueue(),
					dash(it.GetReference()), itemStatus(it.GetStatus()), itemPriority(it.GetPriority()))
				if it.GetException() != casarev1.WorkItemException_WORK_ITEM_EXCEPTION_UNSPECIFIED {
					fmt.Fprintf(w, "Exception:\t%s: %s\n", itemException(it.GetException()), dash(firstLine(it.GetReason())))
				}
				fmt.Fprintf(w, "Retry:\t%d", it.GetRetry())
				if it.GetRetryOf() != "" {
					fmt.Fprintf(w, " (of %s)", it.GetRetryOf())
				}
				fmt.Fprintln(w)
				fmt.Fprintf(w, "Progress:\t%s\n", dash(firstLine(it.GetProgress())))
				job := dash(it.GetJobId())
				if it.GetJobId() != "" {
					job += fmt.Sprintf(" (attempt %d) on robot %s", it.GetAttempt(), dash(it.GetRobotId()))
				}
				fmt.Fprintf(w, "Job:\t%s\n", job)
				fmt.Fprintf(w, "Defer until:\t%s\nDeadline:\t%s\n", formatTime(it.GetDeferUntil()), formatTime(it.GetDeadline()))
				fmt.Fprintf(w, "Created:\t%s by %s\nStarted:\t%s\nEnded:\t%s\n", formatTime(it.GetCreatedAt()), dash(it.GetCreatedBy()),
					formatTime(it.GetStartedAt()), formatTime(it.GetEndedAt()))
				fmt.Fprintf(w, "Data:\t%s\n", structText(it.GetData().AsMap()))
				if it.GetOutput() != nil {
					fmt.Fprintf(w, "Output:\t%s\n", structText(it.GetOutput().AsMap()))
				}
				fmt.Fprintln(w)
				fmt.Fprintln(w, "TIME\tSTATUS\tJOB\tATTEMPT\tROBOT\tMESSAGE")
				for _, e := range res.GetHistory() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", formatTime(e.GetTime()), itemStatus(e.GetStatus()), dash(e.GetJobId()),
						e.GetAttempt(), dash(e.GetRobotId()), dash(firstLine(e.GetMessage())))
				}
			})
		},
	}
}

func structText(m map[string]any) string {
	if len(m) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(m)
	return abbreviate(string(b), 200)
}

// itemIDs are the ids of a bulk command: the arguments, where "-" stands
// for the ids on stdin, one a line or separated by spaces.
func (a *app) itemIDs(args []string) ([]string, error) {
	var ids []string
	seen := map[string]bool{}
	stdin := false
	for _, arg := range args {
		if arg != "-" {
			if !seen[arg] {
				seen[arg] = true
				ids = append(ids, arg)
			}
			continue
		}
		if stdin {
			return nil, usageError("-: stdin is read once")
		}
		stdin = true
		sc := bufio.NewScanner(a.env.Stdin)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			for _, id := range strings.Fields(sc.Text()) {
				if !seen[id] {
					seen[id] = true
					ids = append(ids, id)
				}
			}
		}
		if err := sc.Err(); err != nil {
			return nil, usageError("-: read stdin: %v", err)
		}
	}
	if len(ids) == 0 {
		return nil, usageError("no item ids: give them as arguments, or - to read them from stdin")
	}
	for _, id := range ids {
		if len(id) > 64 {
			return nil, usageError("item id %q: longer than 64 characters", abbreviate(id, 20))
		}
	}
	return ids, nil
}

// bulk calls do on the ids in calls of at most 10,000 and adds up what
// they answer; a refused call after others says how many were done.
func (a *app) bulk(ids []string, verb string, do func(ids []string) (int, error)) (int, error) {
	done := 0
	for start := 0; start < len(ids); start += maxItemsPerCall {
		end := min(start+maxItemsPerCall, len(ids))
		n, err := do(ids[start:end])
		if err != nil {
			if start > 0 {
				return done, prefixError(a.apiError(err), fmt.Sprintf("ids %d to %d refused; %d %s before", start+1, end, done, verb))
			}
			return done, a.apiError(err)
		}
		done += n
	}
	return done, nil
}

func (a *app) workqueuesRetryCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "retry ID... | -",
		Short: "Retry FAILED or ABANDONED items: each gets a NEW copy (- reads ids from stdin)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := a.itemIDs(args)
			if err != nil {
				return err
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.RetryWorkItemsResponse{}
			if _, err := a.bulk(ids, "retried", func(ids []string) (int, error) {
				res, err := conn.workqueues.RetryWorkItems(cmd.Context(), &casarev1.RetryWorkItemsRequest{Ids: ids})
				out.Ids = append(out.Ids, res.GetIds()...)
				return len(res.GetIds()), err
			}); err != nil {
				return err
			}
			return a.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "%d item(s) retried as new items:\n", len(out.GetIds()))
				for _, id := range out.GetIds() {
					fmt.Fprintln(w, id)
				}
			})
		},
	}
}

func (a *app) workqueuesDeferCommand() *cobra.Command {
	var until string
	cmd := &cobra.Command{
		Use:   "defer ID... | - --until T",
		Short: "Set when NEW items may be taken (--until now makes them available at once)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &casarev1.DeferWorkItemsRequest{}
			switch until {
			case "":
				return usageError("--until: required: a time such as 2027-01-31T17:00:00Z or 4h from now, or now")
			case "now":
			default:
				at, err := parseTime(until, time.Now())
				if err != nil {
					return usageError("--until: %v", err)
				}
				req.DeferUntil = timestamppb.New(at)
			}
			ids, err := a.itemIDs(args)
			if err != nil {
				return err
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			n, err := a.bulk(ids, "deferred", func(ids []string) (int, error) {
				req.Ids = ids
				res, err := conn.workqueues.DeferWorkItems(cmd.Context(), req)
				return int(res.GetDeferred()), err
			})
			if err != nil {
				return err
			}
			out := &casarev1.DeferWorkItemsResponse{Deferred: int32(n)}
			return a.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "%d of %d item(s) deferred until %s\n", n, len(ids), formatTime(req.GetDeferUntil()))
			})
		},
	}
	cmd.Flags().StringVar(&until, "until", "", "not taken before this time: RFC 3339, a date, a duration from now (4h, 2d), or now")
	return cmd
}

func (a *app) workqueuesDeleteItemsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete-items ID... | -",
		Short: "Mark NEW, FAILED or ABANDONED items DELETED (- reads ids from stdin)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := a.itemIDs(args)
			if err != nil {
				return err
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			n, err := a.bulk(ids, "deleted", func(ids []string) (int, error) {
				res, err := conn.workqueues.DeleteWorkItems(cmd.Context(), &casarev1.DeleteWorkItemsRequest{Ids: ids})
				return int(res.GetDeleted()), err
			})
			if err != nil {
				return err
			}
			out := &casarev1.DeleteWorkItemsResponse{Deleted: int32(n)}
			return a.print(out, func(w io.Writer) { fmt.Fprintf(w, "%d of %d item(s) deleted\n", n, len(ids)) })
		},
	}
}
