# b3 sweep: mobilenet_v3_large, images/s vs batch size | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, nhwc (channels_last)
# Made by b3. Render with:  gnuplot results.gp  (in this folder)
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
  set terminal pngcairo size 1100,650 font 'sans,10' noenhanced
} else {
  set terminal png size 1100,650 noenhanced
}
set output 'results.png'
set title "b3 sweep: mobilenet_v3_large, images/s vs batch size | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, nhwc (channels_last)\nmean +- 1 sample std over 3 runs per batch size (interleaved); 224x224 real images; 30 steps per run" noenhanced
set xlabel 'batch size' noenhanced
set ylabel 'training images/s' noenhanced
set grid
set yrange [0:*]
set key outside right top noenhanced
set offsets graph 0.04, graph 0.04, 0, 0
set xtics (15, 16, 17, 31, 32, 33)
set arrow from 16, graph 0 to 16, graph 1 nohead dashtype 2 lc rgb '#999999'
set arrow from 32, graph 0 to 32, graph 1 nohead dashtype 2 lc rgb '#999999'
plot \
  'results.dat' index 0 using 1:2 with lines lc rgb '#bbbbbb' title 'mean, all sizes', \
  'results.dat' index 1 using 1:2:3 with yerrorbars pt 7 ps 1.3 lc rgb '#d62728' title 'power of two', \
  'results.dat' index 2 using 1:2:3 with yerrorbars pt 9 ps 1.3 lc rgb '#555555' title 'other'
