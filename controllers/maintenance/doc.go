// Package maintenance is the operator's maintenance scheduler: scheduled (and
// on-demand) expire and cull on every shard of a DiskCache.
//
// The parts, each usable and tested on its own:
//
//   - Parse / Schedule: a standard five-field cron expression
//     (robfig/cron/v3 syntax) in an IANA time zone, with next-run times
//     that are correct across daylight-saving transitions (see Schedule).
//     Errors are *ScheduleError with messages fit for admission and for a
//     status condition.
//   - Decide: the pure scheduling decision. Given the schedule, suspend,
//     startingDeadlineSeconds, the last scheduled time, the trigger
//     annotation and now, it says whether to run now (and for which
//     scheduled time) or how long to wait. Missed runs collapse into one
//     (the most recent, if within the deadline), as with CronJob.
//   - Runner: expire then cull on every shard through the Go client, a
//     bounded number of shards at a time, each under its own timeout.
//   - StatusAfterRun / StatusWithNext / EventFor / MissedEvent: the result
//     as status.maintenance and as Events.
//   - Metrics: Prometheus collectors for the manager's registry.
//   - Scheduler: all of the above behind one call per reconcile,
//     remembering its own last status so a lost status write never repeats
//     a run.
//
// It works on the API types: it takes spec.maintenance and
// status.maintenance of a DiskCache and returns the new status.maintenance,
// which the reconciler writes as it is (controllers/maintenance.go).
package maintenance
