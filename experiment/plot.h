// Plots through gnuplot, a maintained plotting tool (Debian: gnuplot-nox).
// write_plot() always writes <stem>.dat (the numbers) and <stem>.gp (the
// script); when gnuplot is on PATH it runs the script to make <stem>.png.
// Without gnuplot the data and script stay, and the result says how to make
// the PNG later (`gnuplot <stem>.gp`). No pixels are drawn here.
//
// Two kinds of figure:
//   points   x/y series, optionally with +-error bars (sweeps, GEMM sizes)
//   bars     one bar per labelled category, optionally with error bars
//            (layout experiments)
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace b3::plot {

struct Series {
  std::string title;          // legend entry
  std::vector<double> x, y;   // for bars, x is ignored (bars are placed 0, 1, 2, ...)
  std::vector<double> error;  // +- error per point; empty: no error bars
  bool connect = false;       // draw lines between the points (point_type 0: lines only)
  std::string color;          // "#rrggbb"; empty: gnuplot's default cycle
  int point_type = 7;         // gnuplot point type (7 = filled circle)
};

struct Figure {
  std::string title;     // first line: what; should name device, dtype, layout, batch, runs
  std::string subtitle;  // second line (smaller), e.g. how many runs and what the bars mean
  std::string x_label, y_label;
  std::vector<Series> series;
  bool bars = false;                    // bar chart of series[0] over bar_labels
  std::vector<std::string> bar_labels;  // one per bar
  bool log_x = false;
  bool y_from_zero = false;
  std::vector<double> x_marks;  // vertical dashed lines (e.g. at powers of two)
  std::vector<double> x_tics;   // tic marks exactly here (e.g. the batch sizes); empty: automatic
  std::vector<std::string> x_tic_labels;  // optional text for each of x_tics (e.g. layer names)
};

struct PlotFiles {
  std::filesystem::path data, script, image;
  bool rendered = false;  // image written by gnuplot
  std::string note;       // why not, and how to render it; empty when rendered
};

// For numeric x tics (no x_tic_labels): the row each tic's number is printed
// in, 0 being the usual place under the axis. Neighbours too close to print
// side by side (127, 128, 129 on an axis from 100 to 513) go to the rows below,
// so that every number stays readable; all 0 when none is crowded.
std::vector<int> tic_label_rows(const std::vector<double>& tics, bool log_x);

// The gnuplot to use: `program` if it names an executable, else the first
// "gnuplot" on $PATH; nothing when there is none.
std::optional<std::filesystem::path> find_gnuplot(const std::string& program = "gnuplot");

// Writes <stem>.dat and <stem>.gp, then renders <stem>.png with `gnuplot`
// (when given and found). Throws std::invalid_argument for an inconsistent
// figure (series lengths differ, no series, bar labels missing) and
// std::runtime_error when a file cannot be written; a failing gnuplot is not
// an exception but a note (the numbers are already safe on disk).
PlotFiles write_plot(const std::filesystem::path& stem, const Figure& figure,
                     const std::optional<std::filesystem::path>& gnuplot = find_gnuplot());

}  // namespace b3::plot
