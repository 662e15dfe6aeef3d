// What the operating system says about this process, for the step
// benchmark's memory and CPU-time figures (Linux):
//   peak_rss_mib()         the peak resident set so far (getrusage ru_maxrss)
//   current_rss_mib()      the resident set now (/proc/self/statm)
//   process_cpu_seconds()  CPU time of all threads so far: with one thread, a
//                          measure of the work that a loaded machine does not
//                          inflate
#pragma once

namespace b3::experiment {

double peak_rss_mib();
double current_rss_mib();
double process_cpu_seconds();

}  // namespace b3::experiment
