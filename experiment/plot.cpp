// Plots through gnuplot (see plot.h): numbers to <stem>.dat, a script to
// <stem>.gp, and gnuplot run in the output folder so that the script only
// names files beside it (the folder can be moved and re-plotted).
#include "experiment/plot.h"

#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace b3::plot {

namespace {

bool is_executable(const std::filesystem::path& path) {
  std::error_code error;
  return std::filesystem::is_regular_file(path, error) && access(path.c_str(), X_OK) == 0;
}

// A gnuplot single-quoted string: no escapes inside, '' stands for '.
std::string quote_single(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'')
      out += "''";
    else if (c == '\n')
      out += ' ';
    else
      out += c;
  }
  return out + "'";
}

// A gnuplot double-quoted string (understands \n).
std::string quote_double(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

// A POSIX shell single-quoted word.
std::string quote_shell(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  std::ostringstream s;
  s.precision(10);
  s << v;
  return s.str();
}

void check_figure(const Figure& figure) {
  if (figure.series.empty()) throw std::invalid_argument("write_plot: the figure has no series");
  for (const Series& s : figure.series) {
    const size_t n = s.y.size();
    if (!figure.bars && s.x.size() != n) {
      throw std::invalid_argument("write_plot: series '" + s.title + "' has " +
                                  std::to_string(s.x.size()) + " x values and " +
                                  std::to_string(n) + " y values");
    }
    if (!s.error.empty() && s.error.size() != n) {
      throw std::invalid_argument("write_plot: series '" + s.title + "' has " +
                                  std::to_string(s.error.size()) + " error values for " +
                                  std::to_string(n) + " points");
    }
  }
  if (!figure.x_tic_labels.empty() && figure.x_tic_labels.size() != figure.x_tics.size()) {
    throw std::invalid_argument("write_plot: " + std::to_string(figure.x_tic_labels.size()) +
                                " tic labels for " + std::to_string(figure.x_tics.size()) +
                                " tics");
  }
  if (figure.bars && figure.bar_labels.size() != figure.series.front().y.size()) {
    throw std::invalid_argument("write_plot: " + std::to_string(figure.bar_labels.size()) +
                                " bar labels for " +
                                std::to_string(figure.series.front().y.size()) + " bars");
  }
}

std::string data_text(const Figure& figure) {
  std::ostringstream out;
  out << "# " << figure.title << "\n";
  if (figure.bars) {
    const Series& s = figure.series.front();
    out << "# bar label " << figure.y_label << (s.error.empty() ? "" : " error") << "\n";
    for (size_t i = 0; i < s.y.size(); ++i) {
      std::string label = figure.bar_labels[i];
      for (char& c : label)
        if (c == '"') c = '\'';
      out << i << " \"" << label << "\" " << number(s.y[i]);
      if (!s.error.empty()) out << " " << number(std::isnan(s.error[i]) ? 0.0 : s.error[i]);
      out << "\n";
    }
    return out.str();
  }
  // One block per series, two blank lines apart: gnuplot's "index i".
  for (size_t k = 0; k < figure.series.size(); ++k) {
    const Series& s = figure.series[k];
    out << "# index " << k << ": " << s.title << " (x y" << (s.error.empty() ? "" : " error")
        << ")\n";
    for (size_t i = 0; i < s.y.size(); ++i) {
      out << number(s.x[i]) << " " << number(s.y[i]);
      // One run has no spread: drawn as a bar of zero height (the table says n/a).
      if (!s.error.empty()) out << " " << number(std::isnan(s.error[i]) ? 0.0 : s.error[i]);
      out << "\n";
    }
    out << "\n\n";
  }
  return out.str();
}

// The x tics of a point plot: numbers under the axis, in staggered rows when
// neighbours crowd (see tic_label_rows); else the texts given, rotated.
void write_x_tics(std::ostringstream& gp, const Figure& figure) {
  const std::vector<int> rows = figure.x_tic_labels.empty()
                                    ? tic_label_rows(figure.x_tics, figure.log_x)
                                    : std::vector<int>(figure.x_tics.size(), 0);
  const int row_count = rows.empty() ? 1 : *std::max_element(rows.begin(), rows.end()) + 1;
  gp << "set xtics (";
  for (size_t i = 0; i < figure.x_tics.size(); ++i) {
    gp << (i ? ", " : "");
    if (row_count > 1)
      gp << "'' ";  // the numbers are labels below
    else if (i < figure.x_tic_labels.size())
      gp << quote_single(figure.x_tic_labels[i]) << " ";
    gp << number(figure.x_tics[i]);
  }
  const bool crowded = figure.x_tics.size() > 12 || !figure.x_tic_labels.empty();
  gp << ")" << (crowded && row_count == 1 ? " rotate by -45 noenhanced" : "") << "\n";
  if (!figure.x_tic_labels.empty()) gp << "set bmargin 7\n";
  if (row_count == 1) return;
  for (size_t i = 0; i < figure.x_tics.size(); ++i) {
    gp << "set label " << quote_single(number(figure.x_tics[i])) << " at first "
       << number(figure.x_tics[i]) << ", graph " << number(-0.03 - 0.045 * rows[i])
       << " center front\n";
  }
  gp << "set bmargin " << 3 + 2 * row_count << "\n"
     << "set xlabel offset 0," << -2 * (row_count - 1) << "\n";
}

std::string script_text(const Figure& figure, const std::string& data_name,
                        const std::string& image_name) {
  std::ostringstream gp;
  gp << "# " << figure.title << "\n"
     << "# Made by b3. Render with:  gnuplot " << image_name.substr(0, image_name.size() - 4)
     << ".gp  (in this folder)\n"
     << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
     << "  set terminal pngcairo size 1100,650 font 'sans,10' noenhanced\n"
     << "} else {\n"
     << "  set terminal png size 1100,650 noenhanced\n"
     << "}\n"
     << "set output " << quote_single(image_name) << "\n"
     << "set title "
     << quote_double(figure.subtitle.empty() ? figure.title : figure.title + "\n" + figure.subtitle)
     << " noenhanced\n"
     << "set xlabel " << quote_single(figure.x_label) << " noenhanced\n"
     << "set ylabel " << quote_single(figure.y_label) << " noenhanced\n"
     << "set grid\n";
  if (figure.y_from_zero) gp << "set yrange [0:*]\n";
  if (figure.bars) {
    const Series& s = figure.series.front();
    gp << "set key top right noenhanced\n"
       << "set style fill solid 0.6 border -1\n"
       << "set boxwidth 0.6\n"
       << "set xrange [-0.6:" << number(static_cast<double>(s.y.size()) - 0.4) << "]\n"
       << "set xtics rotate by -25 noenhanced\n"
       << "set bmargin 7\n";
    const std::string color = s.color.empty() ? "#4477aa" : s.color;
    gp << "plot " << quote_single(data_name)
       << (s.error.empty() ? " using 1:3:xticlabels(2) with boxes"
                           : " using 1:3:4:xticlabels(2) with boxerrorbars")
       << " lc rgb " << quote_single(color) << " title " << quote_single(s.title) << "\n";
    return gp.str();
  }
  gp << "set key outside right top noenhanced\n"
     << "set offsets graph 0.04, graph 0.04, 0, 0\n";
  if (figure.log_x) gp << "set logscale x 2\n";
  if (!figure.x_tics.empty()) write_x_tics(gp, figure);
  for (double x : figure.x_marks) {
    gp << "set arrow from " << number(x) << ", graph 0 to " << number(x)
       << ", graph 1 nohead dashtype 2 lc rgb '#999999'\n";
  }
  gp << "plot \\\n";
  for (size_t k = 0; k < figure.series.size(); ++k) {
    const Series& s = figure.series[k];
    const std::string color = s.color.empty() ? "" : " lc rgb " + quote_single(s.color);
    const std::string source = "  " + quote_single(data_name) + " index " + std::to_string(k);
    const std::string separator = k + 1 < figure.series.size() ? ", \\\n" : "\n";
    if (s.connect && s.point_type <= 0) {
      gp << source << " using 1:2 with lines" << color << " title " << quote_single(s.title)
         << separator;
      continue;
    }
    if (s.connect) gp << source << " using 1:2 with lines" << color << " notitle, \\\n";
    gp << source << (s.error.empty() ? " using 1:2 with points" : " using 1:2:3 with yerrorbars")
       << " pt " << s.point_type << " ps 1.3" << color << " title " << quote_single(s.title)
       << separator;
  }
  return gp.str();
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("write_plot: cannot write " + path.string());
}

}  // namespace

std::vector<int> tic_label_rows(const std::vector<double>& tics, bool log_x) {
  std::vector<int> rows(tics.size(), 0);
  if (tics.size() < 2) return rows;
  std::vector<double> at(tics.size());
  for (size_t i = 0; i < tics.size(); ++i)
    at[i] = log_x && tics[i] > 0 ? std::log2(tics[i]) : tics[i];
  // (Plain variables, not a structured binding: clang 14's lambdas cannot capture one.)
  const double low = *std::min_element(at.begin(), at.end());
  const double range = *std::max_element(at.begin(), at.end()) - low;
  if (!(range > 0)) return rows;
  // Where each number sits across the plot (0 to 1, with the script's 4%
  // offsets each side), and how far apart two numbers must be: about 8 pixels
  // a digit of the 10-point font, on the ~840-pixel plot area, plus a gap.
  const auto place = [&](size_t i) { return (at[i] - low + 0.04 * range) / (1.08 * range); };
  const auto width = [&](size_t i) { return number(tics[i]).size() * 8.0 / 840.0; };
  std::vector<size_t> order(tics.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return at[a] < at[b]; });
  std::vector<size_t> last_in_row;  // the tic printed last in each row
  for (size_t i : order) {
    size_t row = 0;
    while (row < last_in_row.size() &&
           place(i) - place(last_in_row[row]) < (width(i) + width(last_in_row[row])) / 2 + 0.012)
      ++row;
    if (row == last_in_row.size())
      last_in_row.push_back(i);
    else
      last_in_row[row] = i;
    rows[i] = static_cast<int>(row);
  }
  return rows;
}

std::optional<std::filesystem::path> find_gnuplot(const std::string& program) {
  if (program.find('/') != std::string::npos) {
    if (is_executable(program)) return std::filesystem::path(program);
    return std::nullopt;
  }
  const char* path = std::getenv("PATH");
  if (path == nullptr) return std::nullopt;
  std::string entries = path;
  size_t start = 0;
  while (start <= entries.size()) {
    size_t colon = entries.find(':', start);
    if (colon == std::string::npos) colon = entries.size();
    const std::string dir = entries.substr(start, colon - start);
    start = colon + 1;
    const std::filesystem::path candidate =
        std::filesystem::path(dir.empty() ? "." : dir) / program;
    if (is_executable(candidate)) return candidate;
  }
  return std::nullopt;
}

PlotFiles write_plot(const std::filesystem::path& stem, const Figure& figure,
                     const std::optional<std::filesystem::path>& gnuplot) {
  check_figure(figure);
  PlotFiles files;
  files.data = stem.string() + ".dat";
  files.script = stem.string() + ".gp";
  files.image = stem.string() + ".png";
  const std::filesystem::path folder =
      stem.has_parent_path() ? stem.parent_path() : std::filesystem::path(".");
  const std::string data_name = files.data.filename().string();
  const std::string image_name = files.image.filename().string();
  const std::string script_name = files.script.filename().string();
  write_file(files.data, data_text(figure));
  write_file(files.script, script_text(figure, data_name, image_name));
  std::error_code ignored;
  std::filesystem::remove(files.image, ignored);  // never leave an old image beside new data

  const std::string how = "cd " + quote_shell(folder.string()) + " && gnuplot " + script_name;
  if (!gnuplot) {
    files.note =
        "gnuplot is not installed (Debian: apt-get install gnuplot-nox, or "
        "scripts/setup.sh); the data is in " +
        files.data.string() + "; make the plot with: " + how;
    return files;
  }
  const std::filesystem::path log = stem.string() + ".gnuplot.log";
  const std::string command = "cd " + quote_shell(folder.string()) + " && " +
                              quote_shell(gnuplot->string()) + " " + quote_shell(script_name) +
                              " >" + quote_shell(log.filename().string()) + " 2>&1";
  const int status = std::system(command.c_str());
  const bool ok = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (ok && std::filesystem::exists(files.image)) {
    files.rendered = true;
    std::filesystem::remove(log, ignored);
    return files;
  }
  std::ifstream in(log);
  std::ostringstream messages;
  messages << in.rdbuf();
  files.note = "gnuplot failed (" + gnuplot->string() + "): " + messages.str() +
               " -- the data is in " + files.data.string() + "; retry with: " + how;
  return files;
}

}  // namespace b3::plot
