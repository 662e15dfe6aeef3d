# b3 sweep: mobilenet_v3_large, images/s vs batch size | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, nhwc (channels_last)
# Made by b3. Render with:  gnuplot results.gp  (in this folder)
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
  set terminal pngcairo size 1100,650 font 'sans,10' noenhanced
} else {
  set terminal png size 1100,650 noenhanced
}
set output 'results.png'
set title "b3 sweep: mobilenet_v3_large, images/s vs batch size | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, nhwc (channels_last)\nmean +- 1 sample std over 3 runs per batch size (interleaved); 32x32 real images; 1 epoch(s) per run" noenhanced
set xlabel 'batch size' noenhanced
set ylabel 'training images/s' noenhanced
set grid
set yrange [0:*]
set key outside right top noenhanced
set offsets graph 0.04, graph 0.04, 0, 0
set logscale x 2
set xtics ('' 100, '' 127, '' 128, '' 129, '' 156, '' 255, '' 256, '' 257, '' 511, '' 512, '' 513)
set label '100' at first 100, graph -0.03 center front
set label '127' at first 127, graph -0.03 center front
set label '128' at first 128, graph -0.075 center front
set label '129' at first 129, graph -0.12 center front
set label '156' at first 156, graph -0.03 center front
set label '255' at first 255, graph -0.03 center front
set label '256' at first 256, graph -0.075 center front
set label '257' at first 257, graph -0.12 center front
set label '511' at first 511, graph -0.03 center front
set label '512' at first 512, graph -0.075 center front
set label '513' at first 513, graph -0.12 center front
set bmargin 9
set xlabel offset 0,-4
set arrow from 128, graph 0 to 128, graph 1 nohead dashtype 2 lc rgb '#999999'
set arrow from 256, graph 0 to 256, graph 1 nohead dashtype 2 lc rgb '#999999'
set arrow from 512, graph 0 to 512, graph 1 nohead dashtype 2 lc rgb '#999999'
plot \
  'results.dat' index 0 using 1:2 with lines lc rgb '#bbbbbb' title 'mean, all sizes', \
  'results.dat' index 1 using 1:2:3 with yerrorbars pt 7 ps 1.3 lc rgb '#d62728' title 'power of two', \
  'results.dat' index 2 using 1:2:3 with yerrorbars pt 9 ps 1.3 lc rgb '#555555' title 'other'
