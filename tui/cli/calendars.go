package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// calendarFlags are the flags that describe a calendar; those given
// override the -f file.
type calendarFlags struct {
	file, description, weekdays, hours string
	exclude                            []string
}

func (o *calendarFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "calendar file, JSON or YAML (- for stdin); flags given override it")
	f.StringArrayVar(&o.exclude, "exclude", nil, "a date without fires, YYYY-MM-DD (repeatable; comma-separated lists too)")
	f.StringVar(&o.weekdays, "weekdays", "", "weekdays with fires, e.g. mon,tue,wed,thu,fri (default every day)")
	f.StringVar(&o.hours, "hours", "", "hours of the day with fires, e.g. 8,9,10 (default every hour)")
	f.StringVar(&o.description, "description", "", "what the calendar is for")
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (o *calendarFlags) apply(a *app, cmd *cobra.Command, c *casarev1.Calendar) error {
	if o.file != "" {
		var data []byte
		var err error
		if o.file == "-" {
			data, err = io.ReadAll(a.env.Stdin)
		} else {
			data, err = os.ReadFile(o.file)
		}
		if err != nil {
			return usageError("-f: %v", err)
		}
		raw, err := yaml.YAMLToJSON(data)
		if err != nil {
			return usageError("%s: %v", o.file, err)
		}
		fromFile := &casarev1.Calendar{}
		if err := protojson.Unmarshal(raw, fromFile); err != nil {
			return usageError("%s: %v", o.file, err)
		}
		name := c.GetName()
		c.Reset()
		proto.Merge(c, fromFile)
		if name != "" {
			c.Name = name
		}
	}
	changed := cmd.Flags().Changed
	if changed("exclude") {
		c.ExcludedDates = nil
		for _, v := range o.exclude {
			c.ExcludedDates = append(c.ExcludedDates, splitList(v)...)
		}
	}
	if changed("weekdays") {
		c.Weekdays = splitList(strings.ToLower(o.weekdays))
	}
	if changed("hours") {
		c.Hours = nil
		for _, h := range splitList(o.hours) {
			n, err := strconv.ParseInt(h, 10, 32)
			if err != nil {
				return usageError("--hours: want hours 0-23 such as 8,9,10, got %q", h)
			}
			c.Hours = append(c.Hours, int32(n))
		}
	}
	if changed("description") {
		c.Description = o.description
	}
	return nil
}

func hoursText(hours []int32) string {
	if len(hours) == 0 {
		return "all"
	}
	s := make([]string, len(hours))
	for i, h := range hours {
		s[i] = strconv.Itoa(int(h))
	}
	return strings.Join(s, ",")
}

func weekdaysText(days []string) string {
	if len(days) == 0 {
		return "all"
	}
	return strings.Join(days, ",")
}

func (a *app) calendarsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "calendars", Aliases: []string{"calendar"}, Short: "Manage the calendars schedules share (holidays, working days and hours)"}

	var createFlags calendarFlags
	create := &cobra.Command{
		Use:     "create NAME [--exclude YYYY-MM-DD]... [--weekdays mon,...] [--hours 8,9,...] [-f FILE]",
		Short:   "Create a calendar",
		Example: "  casarectl calendars create holidays --exclude 2026-12-25,2026-12-26 --weekdays mon,tue,wed,thu,fri",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := &casarev1.Calendar{}
			if len(args) == 1 {
				c.Name = args[0]
			}
			if err := createFlags.apply(a, cmd, c); err != nil {
				return err
			}
			if c.GetName() == "" {
				return usageError("create: name the calendar: casarectl calendars create NAME, or name: in the file")
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.schedules.CreateCalendar(cmd.Context(), &casarev1.CreateCalendarRequest{Calendar: c})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetCalendar(), func(w io.Writer) { fmt.Fprintf(w, "calendar %s created\n", res.GetCalendar().GetName()) })
		},
	}
	createFlags.add(create)

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a calendar",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.schedules.GetCalendar(cmd.Context(), &casarev1.GetCalendarRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			c := res.GetCalendar()
			return a.print(c, func(w io.Writer) {
				fmt.Fprintf(w, "Name:\t%s\nDescription:\t%s\nWeekdays:\t%s\nHours:\t%s\nExcluded dates:\t%s\n", c.GetName(), dash(c.GetDescription()),
					weekdaysText(c.GetWeekdays()), hoursText(c.GetHours()), dash(strings.Join(c.GetExcludedDates(), ", ")))
			})
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List calendars",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListCalendarsResponse{}
			req := &casarev1.ListCalendarsRequest{PageSize: 1000}
			for {
				res, err := conn.schedules.ListCalendars(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Calendars = append(out.Calendars, res.GetCalendars()...)
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			return a.print(out, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tWEEKDAYS\tHOURS\tEXCLUDED DATES\tUPDATED")
				for _, c := range out.GetCalendars() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", c.GetName(), weekdaysText(c.GetWeekdays()), hoursText(c.GetHours()), len(c.GetExcludedDates()), formatTime(c.GetUpdatedAt()))
				}
			})
		},
	}

	var updateFlags calendarFlags
	update := &cobra.Command{
		Use:   "update NAME [flags of create]",
		Short: "Change a calendar: the flags given (or the file) replace what they name; its schedules' next fires follow",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			cur, err := conn.schedules.GetCalendar(cmd.Context(), &casarev1.GetCalendarRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			c := cur.GetCalendar()
			if err := updateFlags.apply(a, cmd, c); err != nil {
				return err
			}
			c.Name = args[0]
			res, err := conn.schedules.UpdateCalendar(cmd.Context(), &casarev1.UpdateCalendarRequest{Calendar: c})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetCalendar(), func(w io.Writer) { fmt.Fprintf(w, "calendar %s updated\n", args[0]) })
		},
	}
	updateFlags.add(update)

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a calendar no schedule uses",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.schedules.DeleteCalendar(cmd.Context(), &casarev1.DeleteCalendarRequest{Name: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) { fmt.Fprintf(w, "calendar %s deleted\n", args[0]) })
		},
	}
	cmd.AddCommand(create, get, list, update, del)
	return cmd
}
